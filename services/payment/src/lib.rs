//! The payment service: captures an order's total through the external
//! payment provider once its stock is reserved, refunds it when the order is
//! cancelled or its shipment fails, and voids payments cancelled before any
//! capture could have been made. Every PSP call carries an idempotency key,
//! so no order is ever charged twice.
#![forbid(unsafe_code)]

pub mod domain;
pub mod driver;
pub mod events;
pub mod psp;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use shipshape_messaging::Broker;
use shipshape_messaging::service::{self, ServiceConfig};
use shipshape_proto::{INVENTORY_EVENTS, ORDER_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS};
use shipshape_resilience::{Downstream, ResilienceConfig};
use shipshape_runtime::{CancellationToken, Tasks, config};
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Topics this service publishes to and consumes from.
pub const TOPICS: [&str; 4] = [
    PAYMENT_EVENTS,
    ORDER_EVENTS,
    INVENTORY_EVENTS,
    SHIPPING_EVENTS,
];

pub struct Config {
    /// Database, broker and `OPS_ADDR` (default `0.0.0.0:9103`).
    pub service: ServiceConfig,
    /// `PSP_URL` (default `http://127.0.0.1:8090`).
    pub psp_url: String,
    /// The resilience stack of PSP calls: `PSP_TIMEOUT_MS`,
    /// `PSP_RETRY_*`, `PSP_BREAKER_*`, `PSP_BULKHEAD_*` (see
    /// `shipshape-resilience`).
    pub psp: ResilienceConfig,
    /// `PAYMENT_RETRY_INTERVAL_MS`: how often failed calls are looked for
    /// again (default 500).
    pub retry_interval: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env("payment", "0.0.0.0:9103")?,
            psp_url: config::string_or("PSP_URL", "http://127.0.0.1:8090")?,
            psp: ResilienceConfig::from_env("PSP")?,
            retry_interval: config::millis_or("PAYMENT_RETRY_INTERVAL_MS", 500)?,
        })
    }
}

/// Handles saga events and drives PSP calls until `shutdown`.
pub async fn serve(
    config: Config,
    pool: PgPool,
    broker: Broker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let longest_call = longest_call(&config.psp);
    let psp = psp::PspClient::new(&config.psp_url, Downstream::new("psp", config.psp))?;
    let driver = Arc::new(driver::Driver::new(pool.clone(), psp, longest_call));
    tracing::info!(ops = %config.service.ops_addr, psp = %config.psp_url, "payment serving");
    let tasks = Tasks::new().add(
        "psp retry sweep",
        driver
            .clone()
            .sweep(config.retry_interval, shutdown.clone()),
    );
    let handler = events::PaymentEvents::new(pool.clone(), driver);
    let consumed = vec![ORDER_EVENTS, INVENTORY_EVENTS, SHIPPING_EVENTS];
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

/// The longest one PSP call can take through its stack: every attempt
/// waiting for a bulkhead permit and then timing out, with the longest
/// backoff between attempts.
fn longest_call(psp: &ResilienceConfig) -> Duration {
    let attempts = if psp.retry.enabled {
        psp.retry.max_attempts
    } else {
        1
    };
    let attempt = psp.timeout.duration + psp.bulkhead.max_wait;
    attempt * attempts + psp.retry.cap * attempts.saturating_sub(1)
}
