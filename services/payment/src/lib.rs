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
    /// `PSP_TIMEOUT_MS` per call (default 3000).
    pub psp_timeout: Duration,
    /// `PSP_MAX_CONCURRENT_CALLS` (default 32).
    pub psp_max_concurrent_calls: usize,
    /// `PAYMENT_RETRY_INTERVAL_MS`: how often failed calls are looked for
    /// again (default 500).
    pub retry_interval: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env("payment", "0.0.0.0:9103")?,
            psp_url: config::string_or("PSP_URL", "http://127.0.0.1:8090")?,
            psp_timeout: config::millis_or("PSP_TIMEOUT_MS", 3000)?,
            psp_max_concurrent_calls: config::var_or("PSP_MAX_CONCURRENT_CALLS", 32_usize)?.max(1),
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
    let psp = psp::PspClient::new(&config.psp_url, config.psp_timeout)?;
    let driver = Arc::new(driver::Driver::new(
        pool.clone(),
        psp,
        config.psp_timeout,
        config.psp_max_concurrent_calls,
    ));
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
