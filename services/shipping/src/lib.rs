//! The shipping service: schedules a shipment once an order is paid and its
//! destination is one shipping serves, reports a failure otherwise, and
//! calls off shipments of cancelled orders.
#![forbid(unsafe_code)]

pub mod domain;
pub mod events;

use shipshape_messaging::Broker;
use shipshape_messaging::service::{self, ServiceConfig};
use shipshape_proto::{ORDER_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS};
use shipshape_runtime::{CancellationToken, Tasks, config};
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Topics this service publishes to and consumes from.
pub const TOPICS: [&str; 3] = [SHIPPING_EVENTS, ORDER_EVENTS, PAYMENT_EVENTS];

/// Served by default: most of Europe and North America. Anything else (say
/// `AQ`, Antarctica) fails shipping, which makes that saga path reachable.
pub const DEFAULT_COUNTRIES: &str = "AT,BE,CA,CH,CZ,DE,DK,ES,FI,FR,GB,IE,IT,LU,NL,NO,PL,PT,SE,US";

pub struct Config {
    /// Database, broker and `OPS_ADDR` (default `0.0.0.0:9104`).
    pub service: ServiceConfig,
    /// `SHIPPING_COUNTRIES`, comma separated (default [`DEFAULT_COUNTRIES`]).
    pub coverage: domain::Coverage,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let countries = config::string_or("SHIPPING_COUNTRIES", DEFAULT_COUNTRIES)?;
        Ok(Self {
            service: ServiceConfig::from_env("shipping", "0.0.0.0:9104")?,
            coverage: domain::Coverage::parse(&countries)
                .map_err(|e| anyhow::anyhow!("SHIPPING_COUNTRIES: {e}"))?,
        })
    }
}

/// Handles saga events until `shutdown`.
pub async fn serve(
    config: Config,
    pool: PgPool,
    broker: Broker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(ops = %config.service.ops_addr, "shipping serving");
    let handler = events::ShippingEvents::new(pool.clone(), config.coverage.clone());
    let consumed = vec![ORDER_EVENTS, PAYMENT_EVENTS];
    service::run(
        &config.service,
        pool,
        broker,
        consumed,
        handler,
        Tasks::new(),
        shutdown,
    )
    .await
}
