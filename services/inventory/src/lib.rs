//! The inventory service: owns the catalog, prices and stock. Serves the
//! catalog over gRPC and, in the checkout saga, reserves all of an order's
//! lines or none, releases them on any compensation and marks them sold when
//! the order is confirmed.
#![forbid(unsafe_code)]

pub mod domain;
pub mod events;
pub mod grpc;
pub mod store;

use std::net::SocketAddr;

use shipshape_messaging::Broker;
use shipshape_messaging::service::{self, ServiceConfig};
use shipshape_proto::inventory::inventory_service_server::InventoryServiceServer;
use shipshape_proto::{
    FILE_DESCRIPTOR_SET, INVENTORY_EVENTS, ORDER_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS,
};
use shipshape_runtime::grpc as runtime_grpc;
use shipshape_runtime::{CancellationToken, Tasks, config};
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Topics this service publishes to and consumes from.
pub const TOPICS: [&str; 4] = [
    INVENTORY_EVENTS,
    ORDER_EVENTS,
    PAYMENT_EVENTS,
    SHIPPING_EVENTS,
];

pub struct Config {
    /// Database, broker and `OPS_ADDR` (default `0.0.0.0:9102`).
    pub service: ServiceConfig,
    /// `GRPC_ADDR` (default `0.0.0.0:50052`).
    pub grpc_addr: SocketAddr,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env("inventory", "0.0.0.0:9102")?,
            grpc_addr: config::addr_or("GRPC_ADDR", "0.0.0.0:50052")?,
        })
    }
}

/// Serves the catalog over gRPC (with `grpc.health.v1` and reflection) and
/// handles saga events until `shutdown`.
pub async fn serve(
    config: Config,
    pool: PgPool,
    broker: Broker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grpc = runtime_grpc::serve(
        config.grpc_addr,
        InventoryServiceServer::new(grpc::Catalog::new(pool.clone())),
        FILE_DESCRIPTOR_SET,
        shutdown.clone(),
    );
    tracing::info!(grpc = %config.grpc_addr, ops = %config.service.ops_addr, "inventory serving");
    let tasks = Tasks::new().add("grpc server", grpc);
    let handler = events::InventoryEvents::new(pool.clone());
    let consumed = vec![ORDER_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS];
    service::run(
        &config.service,
        pool,
        broker,
        consumed,
        handler,
        tasks,
        shutdown,
    )
    .await
}
