//! Global load shedding: a cap on the requests the API works on at once.
//! When it is reached, a new request is refused at once with `503` and
//! `Retry-After` instead of waiting in a queue. Queued requests would only
//! time out later, after using memory and making every other request slower;
//! a quick refusal lets the client back off or try another replica.

use std::num::NonZeroUsize;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The requests in flight, as permits of a semaphore.
#[derive(Clone, Debug)]
pub struct LoadShedder {
    permits: Arc<Semaphore>,
}

impl LoadShedder {
    /// Admits at most `max_in_flight` requests at once.
    pub fn new(max_in_flight: NonZeroUsize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(
                max_in_flight.get().min(Semaphore::MAX_PERMITS),
            )),
        }
    }
}

/// A request being worked on. Dropping it, when the response is ready or the
/// client went away, frees its place and updates the gauge.
struct InFlight {
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    fn start(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("shipshape_http_in_flight").increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("shipshape_http_in_flight").decrement(1.0);
    }
}

/// Middleware: runs the request if there is room, otherwise answers `503`
/// with code `overloaded` without waiting.
pub async fn shed(State(shedder): State<LoadShedder>, request: Request, next: Next) -> Response {
    let Ok(permit) = shedder.permits.try_acquire_owned() else {
        metrics::counter!("shipshape_http_shed_total").increment(1);
        tracing::debug!("shedding a request: too many in flight");
        return ApiError::overloaded().into_response();
    };
    // Held until the handler has produced the response.
    let _in_flight = InFlight::start(permit);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::http::header::RETRY_AFTER;
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    use super::*;

    /// A router whose handler reports that it started, then waits until the
    /// test releases it.
    fn held_router(max_in_flight: usize) -> (Router, mpsc::UnboundedReceiver<()>, Arc<Semaphore>) {
        let (started_tx, started) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let gate = release.clone();
        let handler = move || {
            let started_tx = started_tx.clone();
            let gate = gate.clone();
            async move {
                let _ = started_tx.send(());
                // Each released request uses up one permit; the gate is
                // never closed, so `acquire` cannot fail.
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
                "done"
            }
        };
        let max = NonZeroUsize::new(max_in_flight).expect("non-zero");
        let router = Router::new()
            .route("/", get(handler))
            .layer(from_fn_with_state(LoadShedder::new(max), shed));
        (router, started, release)
    }

    fn request() -> Request {
        Request::get("/").body(Body::empty()).expect("request")
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_limit_requests_are_refused_at_once() {
        let n = 3;
        let (router, mut started, release) = held_router(n);
        let held: Vec<_> = (0..n)
            .map(|_| tokio::spawn(router.clone().oneshot(request())))
            .collect();
        for _ in 0..n {
            started.recv().await.expect("a held request started");
        }

        // With time paused, any wait at all would let the timeout fire.
        let refused =
            tokio::time::timeout(Duration::from_millis(1), router.clone().oneshot(request()))
                .await
                .expect("answered without waiting")
                .expect("infallible");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[RETRY_AFTER], "1");
        let body = axum::body::to_bytes(refused.into_body(), usize::MAX)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"]["code"], "overloaded");

        release.add_permits(n);
        for request in held {
            let response = request.await.expect("no panic").expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
        }

        // The places are free again.
        release.add_permits(n);
        let passing: Vec<_> = (0..n)
            .map(|_| tokio::spawn(router.clone().oneshot(request())))
            .collect();
        for request in passing {
            let response = request.await.expect("no panic").expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_abandoned_by_its_client_frees_its_place() {
        let (router, mut started, release) = held_router(1);
        let held = tokio::spawn(router.clone().oneshot(request()));
        started.recv().await.expect("started");
        held.abort();
        assert!(held.await.expect_err("aborted").is_cancelled());

        release.add_permits(1);
        let response = router.oneshot(request()).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
