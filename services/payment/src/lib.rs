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
pub mod publish;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use shipshape_messaging::ServiceSpec;
use shipshape_proto::{PAYMENT_ROLE, Role};
use shipshape_resilience::{Downstream, ResilienceConfig};
use shipshape_runtime::{Wiring, config};
use sqlx::migrate::Migrator;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The payment service, as `shipshape_messaging::service` runs it: it
/// handles saga events and drives PSP calls.
pub struct Spec;

/// The payment service's own settings.
pub struct Config {
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

impl ServiceSpec for Spec {
    const ROLE: Role = PAYMENT_ROLE;
    const DEFAULT_OPS_ADDR: &'static str = "0.0.0.0:9103";

    type Config = Config;
    type Handler = events::PaymentEvents;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn config_from_env() -> anyhow::Result<Config> {
        Ok(Config {
            psp_url: config::string_or("PSP_URL", "http://127.0.0.1:8090")?,
            psp: ResilienceConfig::from_env("PSP")?,
            retry_interval: config::millis_or("PAYMENT_RETRY_INTERVAL_MS", 500)?,
        })
    }

    fn describe_metrics() {
        shipshape_resilience::describe();
    }

    async fn wire(config: Config, wiring: &mut Wiring) -> anyhow::Result<events::PaymentEvents> {
        let longest_call = longest_call(&config.psp);
        let psp = psp::PspClient::new(&config.psp_url, Downstream::new("psp", config.psp))?;
        let driver = Arc::new(driver::Driver::new(
            wiring.pool().clone(),
            psp,
            longest_call,
        ));
        tracing::info!(ops = %wiring.ops_addr(), psp = %config.psp_url, "payment serving");
        let sweep = driver
            .clone()
            .sweep(config.retry_interval, wiring.shutdown());
        wiring.add_task("psp retry sweep", sweep);
        Ok(events::PaymentEvents::new(wiring.pool().clone(), driver))
    }
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
