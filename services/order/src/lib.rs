//! The order service: owns orders. Creates them (pricing through the
//! inventory service), follows the choreographed checkout saga from the other
//! services' events, and decides each order's outcome: CONFIRMED, or
//! CANCELLED once every compensation has been observed.
#![forbid(unsafe_code)]

pub mod deadline;
pub mod events;
pub mod grpc;
pub mod placement;
pub mod saga;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use shipshape_messaging::{Broker, KafkaSettings};
use shipshape_proto::inventory::inventory_service_client::InventoryServiceClient;
use shipshape_proto::order::order_service_server::OrderServiceServer;
use shipshape_proto::{INVENTORY_EVENTS, ORDER_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS};
use shipshape_runtime::database::{self, DatabaseConfig};
use shipshape_runtime::{CancellationToken, Readiness, Tasks, config, ops};
use sqlx::PgPool;
use tonic::transport::Endpoint;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Topics this service publishes to and consumes from.
pub const TOPICS: [&str; 4] = [
    ORDER_EVENTS,
    INVENTORY_EVENTS,
    PAYMENT_EVENTS,
    SHIPPING_EVENTS,
];

pub struct Config {
    pub database: DatabaseConfig,
    pub kafka: KafkaSettings,
    /// `GRPC_ADDR` (default `0.0.0.0:50051`).
    pub grpc_addr: SocketAddr,
    /// `OPS_ADDR` (default `0.0.0.0:9101`).
    pub ops_addr: SocketAddr,
    /// `INVENTORY_URL` (default `http://127.0.0.1:50052`).
    pub inventory_url: String,
    /// `INVENTORY_TIMEOUT_MS` per pricing call (default 3000).
    pub inventory_timeout: Duration,
    /// `SAGA_DEADLINE_MS`: a pending order is cancelled `timed_out` this long
    /// after it was placed (default 30000).
    pub saga_deadline: Duration,
    /// `SAGA_SWEEP_INTERVAL_MS`: how often overdue orders are looked for
    /// (default 1000).
    pub sweep_interval: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            database: DatabaseConfig::from_env("order")?,
            kafka: KafkaSettings::from_env("order")?,
            grpc_addr: config::addr_or("GRPC_ADDR", "0.0.0.0:50051")?,
            ops_addr: config::addr_or("OPS_ADDR", "0.0.0.0:9101")?,
            inventory_url: config::string_or("INVENTORY_URL", "http://127.0.0.1:50052")?,
            inventory_timeout: config::millis_or("INVENTORY_TIMEOUT_MS", 3000)?,
            saga_deadline: config::millis_or("SAGA_DEADLINE_MS", 30_000)?,
            sweep_interval: config::millis_or("SAGA_SWEEP_INTERVAL_MS", 1000)?,
        })
    }
}

/// Serves gRPC, the ops endpoints, the outbox relay, the event consumer and
/// the deadline sweeper until `shutdown`.
pub async fn serve(
    config: Config,
    pool: PgPool,
    broker: Broker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let inventory = Endpoint::from_shared(config.inventory_url.clone())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(config.inventory_timeout)
        .connect_lazy();
    let api = grpc::OrderApi::new(
        pool.clone(),
        InventoryServiceClient::new(inventory),
        config.saga_deadline.as_secs_f64(),
    );
    let grpc = tonic::transport::Server::builder()
        .add_service(OrderServiceServer::new(api))
        .serve_with_shutdown(config.grpc_addr, shutdown.clone().cancelled_owned());
    let consumer = broker.consumer(
        vec![INVENTORY_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS],
        events::OrderEvents::new(pool.clone()),
    );
    let readiness = Readiness::new()
        .with_check("database", database::check(pool.clone()))
        .with_check("broker", broker.check())
        .with_check("consumer group", consumer.membership_check());
    let relay = broker.relay(pool.clone());
    tracing::info!(grpc = %config.grpc_addr, ops = %config.ops_addr, "order serving");
    let stop = shutdown.clone();
    Tasks::new()
        .add(
            "ops server",
            ops::serve(config.ops_addr, readiness, shutdown.clone()),
        )
        .add("grpc server", async move { Ok(grpc.await?) })
        .add("event consumer", consumer.run(shutdown.clone()))
        .add(
            "deadline sweeper",
            deadline::sweep(pool, config.sweep_interval, shutdown.clone()),
        )
        .add("outbox relay", async move {
            relay.run(stop).await;
            Ok(())
        })
        .run(shutdown)
        .await
}
