//! The operations HTTP server every process runs beside its main server:
//! `/healthz` (the process can serve), `/readyz` (its dependencies answer)
//! and `/metrics` (Prometheus), on their own port so probes and scrapes
//! never queue behind user traffic.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Named dependency checks; the process is ready when all of them pass.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_check(
        mut self,
        name: &'static str,
        check: impl Fn() -> CheckFuture + Send + Sync + 'static,
    ) -> Self {
        self.checks.push((name, Arc::new(check)));
        self
    }

    /// Runs every check concurrently: `(all passed, per-check result)`.
    pub async fn evaluate(&self) -> (bool, Map<String, Value>) {
        let handles: Vec<_> = self
            .checks
            .iter()
            .map(|(name, check)| (*name, tokio::spawn(check())))
            .collect();
        let mut ready = true;
        let mut results = Map::new();
        for (name, handle) in handles {
            let outcome = handle
                .await
                .unwrap_or_else(|e| Err(format!("check panicked: {e}")));
            let value = match outcome {
                Ok(()) => json!("ok"),
                Err(reason) => {
                    ready = false;
                    json!({ "error": reason })
                }
            };
            results.insert(name.to_owned(), value);
        }
        (ready, results)
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ready, checks) = readiness.evaluate().await;
    let (status, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    (status, Json(json!({ "status": word, "checks": checks })))
}

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::metrics::render(),
    )
}

/// The ops routes; tests call it without a socket.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

/// Serves the ops routes on `addr` until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_on(bind(addr).await?, readiness, shutdown).await
}

/// Binds the ops server's address, so that its port is known before it
/// serves (port 0 picks a free one; tests do).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the ops server to {addr}"))
}

/// Serves the ops routes on `listener` (see [`bind`]) until `shutdown` is
/// cancelled.
pub async fn serve_on(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "ops server listening");
    axum::serve(listener, router(readiness))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
