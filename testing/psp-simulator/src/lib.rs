//! A stand-in for the external card processor (PSP) the payment service
//! charges through: captures and refunds over HTTP, made safe to retry by
//! idempotency keys, with card tokens that pick the outcome and faults
//! (latency, errors, lost answers) adjustable while it runs.
//!
//! It is the only fake in Shipshape, because it is the only part that stands
//! for a third party. Its books live in memory and, like a real processor's,
//! outlive a crash when `PSP_JOURNAL_PATH` names a file: every new decision
//! (a capture, approved or declined, or a refund) is appended to it as a JSON
//! line before it is answered, and the file is replayed on start, so that a
//! restarted simulator, even one killed with SIGKILL, still replays each
//! idempotency key's answer and lists every charge. Without it, the books
//! die with the process.
//!
//! - `POST /v1/captures` charges a card: 200 approved, 402 declined.
//! - `POST /v1/refunds` refunds part or all of an approved capture: 200.
//! - `GET` and `PUT /admin/faults` read and replace the injected faults.
//! - `GET /admin/ledger` lists every capture and refund, so that tests can
//!   check that no order was charged twice.
//!
//! The `/admin` routes change what every payment meets and show every card
//! token charged, so they answer only callers on a loopback address (the
//! test kit, which runs everything on 127.0.0.1, or a `kubectl
//! port-forward`) and, when `PSP_ADMIN_TOKEN` is set, callers from anywhere
//! that send `Authorization: Bearer <PSP_ADMIN_TOKEN>`; everyone else gets
//! 403 `forbidden`. The token is compared in constant time. Unset (the
//! default), the routes are local only.
//!
//! Errors are `{"error": {"code", "message"}}`: 400 `invalid_request`, 403
//! `forbidden` (an `/admin` route, see above), 404 `unknown_capture`, 422
//! `idempotency_key_reused`, `currency_mismatch` or
//! `refund_exceeds_capture`, 503 `processor_unavailable`, which means
//! nothing was processed and the same request may be sent again, and 500
//! `internal_error` when the journal cannot be written, which means the same
//! (but later writes are refused too, until a restart).
//!
//! Card tokens: `tok_decline` and `tok_insufficient_funds` are declined;
//! `tok_unavailable` is always answered 503 and never processed; `tok_slow`
//! is charged on arrival and answered after `PSP_SLOW_CARD_DELAY_MS`; every
//! other `tok_…` token is approved.
#![forbid(unsafe_code)]

mod admin;
mod api;
mod error;
mod faults;
mod journal;
mod ledger;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use shipshape_runtime::{CancellationToken, Readiness, config};
use shipshape_telemetry::http;

pub use admin::AdminToken;
use error::Error;
use faults::Faults;
use journal::Journal;
use ledger::Ledger;

#[derive(Clone, Debug)]
pub struct Config {
    /// The API (`HTTP_ADDR`, default `0.0.0.0:8090`).
    pub http_addr: SocketAddr,
    /// `/healthz` and `/readyz` (`OPS_ADDR`, default `0.0.0.0:9105`).
    pub ops_addr: SocketAddr,
    /// How long `tok_slow` takes to answer (`PSP_SLOW_CARD_DELAY_MS`, default 2000).
    pub slow_card_delay: Duration,
    /// Where the ledger is journaled, so that it survives a restart
    /// (`PSP_JOURNAL_PATH`; unset or empty keeps it in memory only).
    pub journal_path: Option<PathBuf>,
    /// Opens the `/admin` routes to callers beyond the loopback address
    /// that send `Authorization: Bearer <token>` (`PSP_ADMIN_TOKEN`; unset
    /// or empty: loopback callers only).
    pub admin_token: Option<AdminToken>,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            http_addr: config::addr_or("HTTP_ADDR", "0.0.0.0:8090")?,
            ops_addr: config::addr_or("OPS_ADDR", "0.0.0.0:9105")?,
            slow_card_delay: config::millis_or("PSP_SLOW_CARD_DELAY_MS", 2000)?,
            journal_path: Some(config::string_or("PSP_JOURNAL_PATH", "")?)
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            admin_token: AdminToken::new(&config::string_or("PSP_ADMIN_TOKEN", "")?),
        })
    }
}

/// The simulator's state, shared by every request.
#[derive(Clone)]
pub struct Psp {
    shared: Arc<Shared>,
    /// Lets callers that are not on a loopback address use `/admin`.
    admin_token: Option<AdminToken>,
}

struct Shared {
    ledger: Mutex<Ledger>,
    /// Written before the ledger keeps a new decision; `None` keeps the
    /// ledger in memory only.
    journal: Option<Journal>,
    faults: Mutex<Faults>,
    slow_card_delay: Duration,
    /// Ends every deliberate wait, so that shutdown drains at once.
    shutdown: CancellationToken,
}

impl Psp {
    /// A simulator whose ledger lives in memory only.
    pub fn new(slow_card_delay: Duration, shutdown: CancellationToken) -> Self {
        Self::with_ledger(Ledger::default(), None, slow_card_delay, shutdown)
    }

    /// A simulator whose ledger is journaled to `journal_path`, and restored
    /// from it first if it exists.
    pub fn with_journal(
        journal_path: &Path,
        slow_card_delay: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let (journal, ledger) = Journal::open(journal_path)?;
        Ok(Self::with_ledger(
            ledger,
            Some(journal),
            slow_card_delay,
            shutdown,
        ))
    }

    fn with_ledger(
        ledger: Ledger,
        journal: Option<Journal>,
        slow_card_delay: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                ledger: Mutex::new(ledger),
                journal,
                faults: Mutex::default(),
                slow_card_delay,
                shutdown,
            }),
            admin_token: None,
        }
    }

    /// Opens the `/admin` routes to callers that present `token` (see
    /// [`Config::admin_token`]); without one they answer loopback callers
    /// only.
    pub fn with_admin_token(self, token: Option<AdminToken>) -> Self {
        Self {
            admin_token: token,
            ..self
        }
    }

    fn admin_token(&self) -> Option<&AdminToken> {
        self.admin_token.as_ref()
    }

    // A panic cannot leave either value half-changed: the ledger checks
    // everything before it writes, and faults are replaced whole. So a
    // poisoned lock is safe to keep using.
    //
    // New decisions are journaled while this lock is held: a blocking write,
    // but a short one to a local file, and it keeps the journal in the order
    // the decisions were made.
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

    /// Writes a new decision to the journal, if there is one, before the
    /// ledger keeps it and anyone is answered.
    fn journal(&self, entry: &journal::Entry) -> Result<(), Error> {
        match &self.shared.journal {
            Some(journal) => journal.append(entry),
            None => Ok(()),
        }
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
///
/// The admin routes need the caller's address, which
/// [`into_make_service_with_connect_info`](Router::into_make_service_with_connect_info)
/// adds (as [`run`] does); a request without it, or from an address that
/// is not loopback, needs the admin token. Tests can say where their
/// requests come from with [`MockConnectInfo`](axum::extract::connect_info::MockConnectInfo).
pub fn router(state: Psp) -> Router {
    let admin = Router::<Psp>::new()
        .route("/admin/faults", get(api::get_faults).put(api::put_faults))
        .route("/admin/ledger", get(api::ledger))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    let routes = Router::new()
        .route("/v1/captures", post(api::capture))
        .route("/v1/captures/{idempotency_key}", get(api::find_capture))
        .route("/v1/refunds", post(api::refund))
        .merge(admin)
        .fallback(api::not_found);
    http::traced(routes, http::Caller::Trusted).with_state(state)
}

/// Serves the API and the ops server until `shutdown` is cancelled, or
/// until either fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Before the listener is bound, so that no request meets a ledger that
    // is still being restored.
    let psp = match &config.journal_path {
        Some(path) => Psp::with_journal(path, config.slow_card_delay, shutdown.clone())?,
        None => Psp::new(config.slow_card_delay, shutdown.clone()),
    }
    .with_admin_token(config.admin_token.clone());
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the API to {}", config.http_addr))?;
    tracing::info!(
        addr = %config.http_addr,
        slow_card_delay_ms = config.slow_card_delay.as_millis() as u64,
        journal = ?config.journal_path,
        admin_token = config.admin_token.is_some(),
        "PSP simulator listening"
    );

    let api = async {
        // The peer's address, which decides who may use `/admin`.
        let app = router(psp).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving the API")
    };
    let ops = shipshape_runtime::ops::serve(config.ops_addr, Readiness::new(), shutdown.clone());
    tokio::try_join!(api, ops)?;
    Ok(())
}
