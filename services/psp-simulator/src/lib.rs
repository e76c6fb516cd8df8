//! A stand-in for the external card processor (PSP) the payment service
//! charges through: captures and refunds over HTTP, made safe to retry by
//! idempotency keys, with card tokens that pick the outcome and faults
//! (latency, errors, lost answers) adjustable while it runs.
//!
//! It is the only fake in Shipshape, because it is the only part that stands
//! for a third party. Its books live in memory and die with the process.
//!
//! - `POST /v1/captures` charges a card: 200 approved, 402 declined.
//! - `POST /v1/refunds` refunds part or all of an approved capture: 200.
//! - `GET` and `PUT /admin/faults` read and replace the injected faults.
//! - `GET /admin/ledger` lists every capture and refund, so that tests can
//!   check that no order was charged twice.
//!
//! Errors are `{"error": {"code", "message"}}`: 400 `invalid_request`, 404
//! `unknown_capture`, 422 `idempotency_key_reused`, `currency_mismatch` or
//! `refund_exceeds_capture`, and 503 `processor_unavailable`, which means
//! nothing was processed and the same request may be sent again.
//!
//! Card tokens: `tok_decline` and `tok_insufficient_funds` are declined;
//! `tok_unavailable` is always answered 503 and never processed; `tok_slow`
//! is charged on arrival and answered after `PSP_SLOW_CARD_DELAY_MS`; every
//! other `tok_…` token is approved.
#![forbid(unsafe_code)]

mod api;
mod error;
mod faults;
mod ledger;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use shipshape_runtime::{CancellationToken, Readiness, config};

use error::Error;
use faults::Faults;
use ledger::Ledger;

#[derive(Clone, Debug)]
pub struct Config {
    /// The API (`HTTP_ADDR`, default `0.0.0.0:8090`).
    pub http_addr: SocketAddr,
    /// `/healthz` and `/readyz` (`OPS_ADDR`, default `0.0.0.0:9105`).
    pub ops_addr: SocketAddr,
    /// How long `tok_slow` takes to answer (`PSP_SLOW_CARD_DELAY_MS`, default 2000).
    pub slow_card_delay: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            http_addr: config::addr_or("HTTP_ADDR", "0.0.0.0:8090")?,
            ops_addr: config::addr_or("OPS_ADDR", "0.0.0.0:9105")?,
            slow_card_delay: config::millis_or("PSP_SLOW_CARD_DELAY_MS", 2000)?,
        })
    }
}

/// The simulator's state, shared by every request.
#[derive(Clone)]
pub struct Psp {
    shared: Arc<Shared>,
}

struct Shared {
    ledger: Mutex<Ledger>,
    faults: Mutex<Faults>,
    slow_card_delay: Duration,
    /// Ends every deliberate wait, so that shutdown drains at once.
    shutdown: CancellationToken,
}

impl Psp {
    pub fn new(slow_card_delay: Duration, shutdown: CancellationToken) -> Self {
        Self {
            shared: Arc::new(Shared {
                ledger: Mutex::default(),
                faults: Mutex::default(),
                slow_card_delay,
                shutdown,
            }),
        }
    }

    // A panic cannot leave either value half-changed: the ledger checks
    // everything before it writes, and faults are replaced whole. So a
    // poisoned lock is safe to keep using.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.shared
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn slow_card_delay(&self) -> Duration {
        self.shared.slow_card_delay
    }

    /// Waits `duration`, or until shutdown.
    async fn sleep(&self, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        tokio::select! {
            () = self.shared.shutdown.cancelled() => {}
            () = tokio::time::sleep(duration) => {}
        }
    }
}

/// The API and admin routes; tests call it without a socket.
pub fn router(state: Psp) -> Router {
    Router::new()
        .route("/v1/captures", post(api::capture))
        .route("/v1/captures/{idempotency_key}", get(api::find_capture))
        .route("/v1/refunds", post(api::refund))
        .route("/admin/faults", get(api::get_faults).put(api::put_faults))
        .route("/admin/ledger", get(api::ledger))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn(
            shipshape_telemetry::http::trace_requests,
        ))
        .with_state(state)
}

/// Serves the API and the ops server until `shutdown` is cancelled, or
/// until either fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the API to {}", config.http_addr))?;
    tracing::info!(
        addr = %config.http_addr,
        slow_card_delay_ms = config.slow_card_delay.as_millis() as u64,
        "PSP simulator listening"
    );

    let psp = Psp::new(config.slow_card_delay, shutdown.clone());
    let api = async {
        axum::serve(listener, router(psp))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving the API")
    };
    let ops = shipshape_runtime::ops::serve(config.ops_addr, Readiness::new(), shutdown.clone());
    tokio::try_join!(api, ops)?;
    Ok(())
}
