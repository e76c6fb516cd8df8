//! The shipping service: schedules a shipment once an order is paid and its
//! destination is one shipping serves, reports a failure otherwise, and
//! calls off shipments of cancelled orders.
#![forbid(unsafe_code)]

pub mod domain;
pub mod events;

use std::net::SocketAddr;

use shipshape_messaging::{Broker, KafkaSettings};
use shipshape_proto::{ORDER_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS};
use shipshape_runtime::database::{self, DatabaseConfig};
use shipshape_runtime::{CancellationToken, Readiness, Tasks, config, ops};
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Topics this service publishes to and consumes from.
pub const TOPICS: [&str; 3] = [SHIPPING_EVENTS, ORDER_EVENTS, PAYMENT_EVENTS];

/// Served by default: most of Europe and North America. Anything else (say
/// `AQ`, Antarctica) fails shipping, which makes that saga path reachable.
pub const DEFAULT_COUNTRIES: &str = "AT,BE,CA,CH,CZ,DE,DK,ES,FI,FR,GB,IE,IT,LU,NL,NO,PL,PT,SE,US";

pub struct Config {
    pub database: DatabaseConfig,
    pub kafka: KafkaSettings,
    /// `OPS_ADDR` (default `0.0.0.0:9104`).
    pub ops_addr: SocketAddr,
    /// `SHIPPING_COUNTRIES`, comma separated (default [`DEFAULT_COUNTRIES`]).
    pub coverage: domain::Coverage,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let countries = config::string_or("SHIPPING_COUNTRIES", DEFAULT_COUNTRIES)?;
        Ok(Self {
            database: DatabaseConfig::from_env("shipping")?,
            kafka: KafkaSettings::from_env("shipping")?,
            ops_addr: config::addr_or("OPS_ADDR", "0.0.0.0:9104")?,
            coverage: domain::Coverage::parse(&countries)
                .map_err(|e| anyhow::anyhow!("SHIPPING_COUNTRIES: {e}"))?,
        })
    }
}

/// Serves the ops endpoints, the event consumer and the outbox relay until
/// `shutdown`.
pub async fn serve(
    config: Config,
    pool: PgPool,
    broker: Broker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = broker.consumer(
        vec![ORDER_EVENTS, PAYMENT_EVENTS],
        events::ShippingEvents::new(pool.clone(), config.coverage.clone()),
    );
    let readiness = Readiness::new()
        .with_check("database", database::check(pool.clone()))
        .with_check("broker", broker.check())
        .with_check("consumer group", consumer.membership_check());
    let relay = broker.relay(pool);
    tracing::info!(ops = %config.ops_addr, "shipping serving");
    let stop = shutdown.clone();
    Tasks::new()
        .add(
            "ops server",
            ops::serve(config.ops_addr, readiness, shutdown.clone()),
        )
        .add("event consumer", consumer.run(shutdown.clone()))
        .add("outbox relay", async move {
            relay.run(stop).await;
            Ok(())
        })
        .run(shutdown)
        .await
}
