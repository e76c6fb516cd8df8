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
/// Dependencies it can answer without are only reported.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
    reports: Vec<(&'static str, Check)>,
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

    /// A dependency shown on `/readyz` under `dependencies` that does not
    /// decide readiness: the process still answers without it (the gateway
    /// serves its last catalog, or `503` with `Retry-After`), and taking the
    /// process out of its Service would turn those answers into refused
    /// connections.
    pub fn with_report(
        mut self,
        name: &'static str,
        check: impl Fn() -> CheckFuture + Send + Sync + 'static,
    ) -> Self {
        self.reports.push((name, Arc::new(check)));
        self
    }

    /// Runs every check and report concurrently: `(all checks passed,
    /// per-check result, per-report result)`.
    pub async fn evaluate(&self) -> (bool, Map<String, Value>, Map<String, Value>) {
        let (checks, reports) = tokio::join!(run_all(&self.checks), run_all(&self.reports));
        let ready = checks.values().all(|outcome| *outcome == "ok");
        (ready, checks, reports)
    }
}

/// Each check's result by name: `"ok"`, or `{"error": reason}`.
async fn run_all(checks: &[(&'static str, Check)]) -> Map<String, Value> {
    let handles: Vec<_> = checks
        .iter()
        .map(|(name, check)| (*name, tokio::spawn(check())))
        .collect();
    let mut results = Map::new();
    for (name, handle) in handles {
        let outcome = handle
            .await
            .unwrap_or_else(|e| Err(format!("check panicked: {e}")));
        let value = match outcome {
            Ok(()) => json!("ok"),
            Err(reason) => json!({ "error": reason }),
        };
        results.insert(name.to_owned(), value);
    }
    results
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ready, checks, reports) = readiness.evaluate().await;
    let (status, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    let mut body = json!({ "status": word, "checks": checks });
    if !reports.is_empty() {
        body["dependencies"] = Value::Object(reports);
    }
    (status, Json(body))
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    fn passing() -> CheckFuture {
        Box::pin(async { Ok(()) })
    }

    fn failing() -> CheckFuture {
        Box::pin(async { Err("refused".to_owned()) })
    }

    async fn readyz(readiness: Readiness) -> (StatusCode, Value) {
        let request = Request::get("/readyz")
            .body(Body::empty())
            .expect("request");
        let response = router(readiness).oneshot(request).await.expect("answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn a_failing_check_makes_the_process_unready_a_failing_report_does_not() {
        let (status, body) = readyz(Readiness::new().with_check("database", failing)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({"status": "not_ready", "checks": {"database": {"error": "refused"}}})
        );

        let readiness = Readiness::new()
            .with_check("database", passing)
            .with_report("inventory", failing)
            .with_report("order", passing);
        let (status, body) = readyz(readiness).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({
                "status": "ready",
                "checks": {"database": "ok"},
                "dependencies": {"inventory": {"error": "refused"}, "order": "ok"},
            })
        );
    }
}
