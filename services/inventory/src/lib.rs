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

use shipshape_messaging::{Broker, KafkaSettings};
use shipshape_proto::inventory::inventory_service_server::InventoryServiceServer;
use shipshape_proto::{INVENTORY_EVENTS, ORDER_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS};
use shipshape_runtime::database::{self, DatabaseConfig};
use shipshape_runtime::{CancellationToken, Readiness, Tasks, config, ops};
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
    pub database: DatabaseConfig,
    pub kafka: KafkaSettings,
    /// `GRPC_ADDR` (default `0.0.0.0:50052`).
    pub grpc_addr: SocketAddr,
    /// `OPS_ADDR` (default `0.0.0.0:9102`).
    pub ops_addr: SocketAddr,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            database: DatabaseConfig::from_env("inventory")?,
            kafka: KafkaSettings::from_env("inventory")?,
            grpc_addr: config::addr_or("GRPC_ADDR", "0.0.0.0:50052")?,
            ops_addr: config::addr_or("OPS_ADDR", "0.0.0.0:9102")?,
        })
    }
}

/// Serves gRPC, the ops endpoints, the outbox relay and the event consumer
/// until `shutdown`.
pub async fn serve(
    config: Config,
    pool: PgPool,
    broker: Broker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grpc = tonic::transport::Server::builder()
        .add_service(InventoryServiceServer::new(grpc::Catalog::new(
            pool.clone(),
        )))
        .serve_with_shutdown(config.grpc_addr, shutdown.clone().cancelled_owned());
    let consumer = broker.consumer(
        vec![ORDER_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS],
        events::InventoryEvents::new(pool.clone()),
    );
    let readiness = Readiness::new()
        .with_check("database", database::check(pool.clone()))
        .with_check("broker", broker.check())
        .with_check("consumer group", consumer.membership_check());
    let relay = broker.relay(pool);
    tracing::info!(grpc = %config.grpc_addr, ops = %config.ops_addr, "inventory serving");
    let stop = shutdown.clone();
    Tasks::new()
        .add(
            "ops server",
            ops::serve(config.ops_addr, readiness, shutdown.clone()),
        )
        .add("grpc server", async move { Ok(grpc.await?) })
        .add("event consumer", consumer.run(shutdown.clone()))
        .add("outbox relay", async move {
            relay.run(stop).await;
            Ok(())
        })
        .run(shutdown)
        .await
}
