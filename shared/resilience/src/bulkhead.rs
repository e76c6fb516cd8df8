//! A concurrency limit per downstream, so one slow dependency cannot tie up
//! every task and connection of the caller: once the limit is reached,
//! further calls wait at most a short, bounded time for a permit (by default
//! not at all) and then fail fast with [`ResilienceError::BulkheadFull`].
//! A permit is held until the inner call completes or is dropped.
//!
//! The permit is taken when the call starts, not in `poll_ready`: waiting
//! there would be unbounded and invisible to the timeout above.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::config::Vars;
use crate::{ResilienceError, telemetry};

/// `{PREFIX}_BULKHEAD_ENABLED` (default `true`),
/// `{PREFIX}_BULKHEAD_MAX_CONCURRENT` (default 64) and
/// `{PREFIX}_BULKHEAD_MAX_WAIT_MS` (default 0: fail fast).
#[derive(Clone, Debug, PartialEq)]
pub struct BulkheadConfig {
    pub enabled: bool,
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// How long a call may wait for a permit before it is refused.
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrent: 64,
            max_wait: Duration::ZERO,
        }
    }
}

impl BulkheadConfig {
    pub fn from_env(prefix: &str) -> anyhow::Result<Self> {
        Self::from_env_over(prefix, Self::default())
    }

    /// [`Self::from_env`] over the service's own defaults `default`
    /// instead of the crate's.
    pub fn from_env_over(prefix: &str, default: Self) -> anyhow::Result<Self> {
        let vars = Vars::new(prefix);
        Ok(Self {
            enabled: vars.get("BULKHEAD_ENABLED", default.enabled)?,
            max_concurrent: vars.within(
                "BULKHEAD_MAX_CONCURRENT",
                default.max_concurrent,
                1..=Semaphore::MAX_PERMITS,
            )?,
            max_wait: vars.millis("BULKHEAD_MAX_WAIT_MS", default.max_wait)?,
        })
    }
}

/// Wraps services in [`Bulkhead`]s that share one limit: clones of the
/// layer, and every service it wraps, draw from the same permits.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    downstream: &'static str,
    config: BulkheadConfig,
    permits: Arc<Semaphore>,
}

impl BulkheadLayer {
    pub fn new(downstream: &'static str, config: BulkheadConfig) -> Self {
        let permits = Arc::new(Semaphore::new(
            config.max_concurrent.min(Semaphore::MAX_PERMITS),
        ));
        metrics::gauge!(telemetry::BULKHEAD_IN_USE, "downstream" => downstream).set(0.0);
        telemetry::register_counter(telemetry::BULKHEAD_REJECTIONS, downstream);
        Self {
            shared: Arc::new(Shared {
                downstream,
                config,
                permits,
            }),
        }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Bulkhead<S> {
        Bulkhead {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Lets a call through only with a permit. The innermost layer of the
/// stack: it turns the inner service's error `E` into
/// [`ResilienceError::Inner`].
#[derive(Clone, Debug)]
pub struct Bulkhead<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req> + Clone,
{
    type Response = S::Response;
    type Error = ResilienceError<S::Error>;
    type Future = ResponseFuture<S, Req, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::Inner)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let shared = self.shared.clone();
        let state = if !shared.config.enabled {
            State::Calling {
                future: self.inner.call(request),
                permit: None,
            }
        } else if let Ok(permit) = shared.permits.clone().try_acquire_owned() {
            State::Calling {
                future: self.inner.call(request),
                permit: Some(Permit::new(permit, shared.clone())),
            }
        } else if shared.config.max_wait.is_zero() {
            shared.rejected();
            State::Rejected
        } else {
            // The ready service goes with the waiting call; this one keeps
            // a fresh clone (which is not ready yet).
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            let wait = tokio::time::timeout(
                shared.config.max_wait,
                shared.permits.clone().acquire_owned(),
            );
            State::Waiting {
                acquire: Box::pin(async move { wait.await.ok().and_then(Result::ok) }),
                call: Some((inner, request)),
            }
        };
        ResponseFuture { state, shared }
    }
}

impl Shared {
    fn rejected(&self) {
        metrics::counter!(telemetry::BULKHEAD_REJECTIONS, "downstream" => self.downstream)
            .increment(1);
    }
}

/// A permit, reflected in the in-use gauge while it is held.
struct Permit {
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
}

impl Permit {
    fn new(permit: OwnedSemaphorePermit, shared: Arc<Shared>) -> Self {
        metrics::gauge!(telemetry::BULKHEAD_IN_USE, "downstream" => shared.downstream)
            .increment(1.0);
        Self {
            _permit: permit,
            shared,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::BULKHEAD_IN_USE, "downstream" => self.shared.downstream)
            .decrement(1.0);
    }
}

/// `None` when no permit came free within the maximum wait.
type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        Waiting {
            acquire: Acquire,
            call: Option<(S, Req)>,
        },
        Calling {
            #[pin]
            future: F,
            permit: Option<Permit>,
        },
        Rejected,
    }
}

pin_project! {
    /// A call waiting for its permit, running with it, or refused.
    pub struct ResponseFuture<S, Req, F> {
        #[pin]
        state: State<S, Req, F>,
        shared: Arc<Shared>,
    }
}

impl<S, Req> Future for ResponseFuture<S, Req, S::Future>
where
    S: Service<Req>,
{
    type Output = Result<S::Response, ResilienceError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { acquire, call } => {
                    let permit = ready!(acquire.as_mut().poll(cx));
                    let (Some(permit), Some((mut inner, request))) = (permit, call.take()) else {
                        this.shared.rejected();
                        this.state.set(State::Rejected);
                        continue;
                    };
                    let permit = Permit::new(permit, this.shared.clone());
                    this.state.set(State::Calling {
                        future: inner.call(request),
                        permit: Some(permit),
                    });
                }
                StateProj::Calling { future, permit } => {
                    let result = ready!(future.poll(cx));
                    // Free the slot now, not when the caller drops this.
                    permit.take();
                    return Poll::Ready(result.map_err(ResilienceError::Inner));
                }
                StateProj::Rejected => {
                    return Poll::Ready(Err(ResilienceError::BulkheadFull {
                        downstream: this.shared.downstream,
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{Fake, Metrics, ok, slow};

    fn layer(max_concurrent: usize, max_wait: Duration) -> BulkheadLayer {
        BulkheadLayer::new(
            "inventory",
            BulkheadConfig {
                enabled: true,
                max_concurrent,
                max_wait,
            },
        )
    }

    /// Lets spawned calls start (time is paused: nothing else advances).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_call_beyond_the_limit_is_refused_without_reaching_the_inner_service() {
        let metrics = Metrics::local();
        let fake = Fake::new([slow(Duration::from_secs(10), ok())]);
        let service = layer(2, Duration::ZERO).layer(fake.service());
        let in_flight: Vec<_> = (0..2)
            .map(|_| tokio::spawn(service.clone().oneshot(())))
            .collect();
        settle().await;
        assert_eq!(
            metrics.value(r#"shipshape_bulkhead_in_use{downstream="inventory"}"#),
            Some(2.0)
        );

        let result = service.clone().oneshot(()).await;

        assert!(
            matches!(result, Err(ResilienceError::BulkheadFull { .. })),
            "{result:?}"
        );
        assert_eq!(fake.calls(), 2);
        assert_eq!(
            metrics.value(r#"shipshape_bulkhead_rejections_total{downstream="inventory"}"#),
            Some(1.0)
        );
        for call in in_flight {
            call.await.unwrap().unwrap();
        }
        assert_eq!(
            metrics.value(r#"shipshape_bulkhead_in_use{downstream="inventory"}"#),
            Some(0.0)
        );
        service.oneshot(()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_for_a_permit_freed_within_the_maximum_wait() {
        let fake = Fake::new([slow(Duration::from_millis(50), ok()), ok()]);
        let service = layer(1, Duration::from_millis(100)).layer(fake.service());
        let first = tokio::spawn(service.clone().oneshot(()));
        settle().await;

        let started = Instant::now();
        service.oneshot(()).await.unwrap();

        assert_eq!(started.elapsed(), Duration::from_millis(49));
        first.await.unwrap().unwrap();
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_refused_when_no_permit_frees_within_the_maximum_wait() {
        let fake = Fake::new([slow(Duration::from_millis(150), ok()), ok()]);
        let service = layer(1, Duration::from_millis(100)).layer(fake.service());
        let _first = tokio::spawn(service.clone().oneshot(()));
        settle().await;

        let started = Instant::now();
        let result = service.oneshot(()).await;

        assert!(
            matches!(result, Err(ResilienceError::BulkheadFull { .. })),
            "{result:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_call_frees_its_permit() {
        let fake = Fake::new([slow(Duration::from_secs(10), ok()), ok()]);
        let mut service = layer(1, Duration::ZERO).layer(fake.service());

        let abandoned = service.ready().await.unwrap().call(());
        let refused = service.ready().await.unwrap().call(()).await;
        assert!(
            matches!(refused, Err(ResilienceError::BulkheadFull { .. })),
            "{refused:?}"
        );
        drop(abandoned);

        service.oneshot(()).await.unwrap();
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_lets_every_call_through() {
        let fake = Fake::new([slow(Duration::from_secs(10), ok())]);
        let service = BulkheadLayer::new(
            "inventory",
            BulkheadConfig {
                enabled: false,
                max_concurrent: 1,
                max_wait: Duration::ZERO,
            },
        )
        .layer(fake.service());
        let calls: Vec<_> = (0..3)
            .map(|_| tokio::spawn(service.clone().oneshot(())))
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(fake.calls(), 3);
    }
}
