//! Global load shedding: a cap on the requests the API works on at once,
//! and a smaller cap on those of any one client. When the global cap is
//! reached, a new request is refused at once with `503` and `Retry-After`
//! instead of waiting in a queue. Queued requests would only time out later,
//! after using memory and making every other request slower; a quick refusal
//! lets the client back off or try another replica. A client at its own cap
//! gets `429`: one customer cannot take every place, whoever they are.
//!
//! A request counts from when its body has been read (see
//! [`crate::request_body`]), so a slow sender holds no place.

use std::num::NonZeroUsize;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client::{ClientKey, ClientKeys, Held, PerClient};
use crate::error::ApiError;
use crate::http_metrics;

/// The requests in flight, as permits of a semaphore, and each client's
/// count of them.
#[derive(Clone, Debug)]
pub struct LoadShedder {
    permits: Arc<Semaphore>,
    keys: Arc<ClientKeys>,
    per_client: PerClient<ClientKey>,
}

impl LoadShedder {
    /// Admits at most `max_in_flight` requests at once, and at most
    /// `per_client` of them from one client.
    pub fn new(max_in_flight: NonZeroUsize, per_client: NonZeroUsize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(
                max_in_flight.get().min(Semaphore::MAX_PERMITS),
            )),
            keys: Arc::new(ClientKeys::new()),
            per_client: PerClient::new(per_client),
        }
    }
}

/// A request being worked on. Dropping it, when the response is ready or the
/// client went away, frees its place and updates the gauge.
struct InFlight {
    _permit: OwnedSemaphorePermit,
    _place: Held<ClientKey>,
}

impl InFlight {
    fn start(permit: OwnedSemaphorePermit, place: Held<ClientKey>) -> Self {
        metrics::gauge!(http_metrics::IN_FLIGHT).increment(1.0);
        Self {
            _permit: permit,
            _place: place,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(http_metrics::IN_FLIGHT).decrement(1.0);
    }
}

/// Middleware: runs the request if there is room, overall and for its
/// client; otherwise answers without waiting: `503` `overloaded` when the
/// gateway is full, `429` `too_many_in_flight` when the client is.
pub async fn shed(State(shedder): State<LoadShedder>, request: Request, next: Next) -> Response {
    let Ok(permit) = shedder.permits.clone().try_acquire_owned() else {
        metrics::counter!(http_metrics::SHED, "scope" => http_metrics::SCOPE_ALL).increment(1);
        tracing::debug!("shedding a request: too many in flight");
        return ApiError::overloaded().into_response();
    };
    let Some(place) = shedder.per_client.admit(shedder.keys.of(&request)) else {
        metrics::counter!(http_metrics::SHED, "scope" => http_metrics::SCOPE_CLIENT).increment(1);
        tracing::debug!("shedding a request: its client has too many in flight");
        return ApiError::too_many_in_flight().into_response();
    };
    // Held until the handler has produced the response.
    let _in_flight = InFlight::start(permit, place);
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
        let max = NonZeroUsize::new(max_in_flight).expect("non-zero");
        held_router_with(LoadShedder::new(max, max))
    }

    /// The same, behind `shedder`.
    fn held_router_with(
        shedder: LoadShedder,
    ) -> (Router, mpsc::UnboundedReceiver<()>, Arc<Semaphore>) {
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
        let router = Router::new()
            .route("/", get(handler))
            .layer(from_fn_with_state(shedder, shed));
        (router, started, release)
    }

    /// The `error.code` of a refusal's JSON body.
    async fn error_code(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
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
        assert_eq!(error_code(refused).await, "overloaded");

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

    #[tokio::test(start_paused = true)]
    async fn a_client_beyond_its_cap_gets_429_while_the_gateway_has_room() {
        let shedder = LoadShedder::new(
            NonZeroUsize::new(10).expect("non-zero"),
            NonZeroUsize::new(1).expect("non-zero"),
        );
        let (router, mut started, release) = held_router_with(shedder);
        let held = tokio::spawn(router.clone().oneshot(request()));
        started.recv().await.expect("started");

        let refused = router.clone().oneshot(request()).await.expect("infallible");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[RETRY_AFTER], "1");
        assert_eq!(error_code(refused).await, "too_many_in_flight");

        release.add_permits(1);
        assert_eq!(
            held.await.expect("no panic").expect("infallible").status(),
            StatusCode::OK
        );
    }
}
