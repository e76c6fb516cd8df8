//! An upper bound on each call attempt, so a downstream that stopped
//! answering costs the caller a known time instead of a hung request and a
//! held connection. It sits under the retry layer, so every attempt gets
//! the full timeout, and under the circuit breaker, so the breaker counts
//! each timeout as a failure.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::config::Vars;
use crate::{ResilienceError, telemetry};

/// `{PREFIX}_TIMEOUT_ENABLED` (default `true`) and `{PREFIX}_TIMEOUT_MS`
/// (default 3000).
#[derive(Clone, Debug, PartialEq)]
pub struct TimeoutConfig {
    pub enabled: bool,
    /// How long one attempt may take, including the wait for a bulkhead
    /// permit.
    pub duration: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            duration: Duration::from_secs(3),
        }
    }
}

impl TimeoutConfig {
    pub fn from_env(prefix: &str) -> anyhow::Result<Self> {
        Self::from_env_over(prefix, Self::default())
    }

    /// [`Self::from_env`] over the service's own defaults `default`
    /// instead of the crate's.
    pub fn from_env_over(prefix: &str, default: Self) -> anyhow::Result<Self> {
        let vars = Vars::new(prefix);
        let duration = vars.millis("TIMEOUT_MS", default.duration)?;
        if duration.is_zero() {
            anyhow::bail!(
                "environment variable {}=0 is invalid: must be above 0",
                vars.name("TIMEOUT_MS")
            );
        }
        Ok(Self {
            enabled: vars.get("TIMEOUT_ENABLED", default.enabled)?,
            duration,
        })
    }
}

/// Wraps a service in [`Timeout`].
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    downstream: &'static str,
    config: TimeoutConfig,
}

impl TimeoutLayer {
    pub fn new(downstream: &'static str, config: TimeoutConfig) -> Self {
        telemetry::register_counter(telemetry::CALL_TIMEOUTS, downstream);
        Self { downstream, config }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            layer: self.clone(),
        }
    }
}

/// Fails a call with [`ResilienceError::Timeout`] once it has run for the
/// configured duration, dropping (cancelling) the inner call.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    layer: TimeoutLayer,
}

impl<S, Req, E> Service<Req> for Timeout<S>
where
    S: Service<Req, Error = ResilienceError<E>>,
{
    type Response = S::Response;
    type Error = ResilienceError<E>;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let config = &self.layer.config;
        ResponseFuture {
            inner: self.inner.call(request),
            sleep: config.enabled.then(|| tokio::time::sleep(config.duration)),
            downstream: self.layer.downstream,
        }
    }
}

pin_project! {
    /// The inner call racing its deadline; the clock starts at `call`.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        downstream: &'static str,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, ResilienceError<E>>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => {
                let downstream = *this.downstream;
                metrics::counter!(telemetry::CALL_TIMEOUTS, "downstream" => downstream)
                    .increment(1);
                Poll::Ready(Err(ResilienceError::Timeout { downstream }))
            }
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;
    use tonic::Code;
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{Fake, Metrics, fail, ok, slow};

    fn layer(duration: Duration) -> TimeoutLayer {
        TimeoutLayer::new(
            "inventory",
            TimeoutConfig {
                enabled: true,
                duration,
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_configured_time_and_not_before() {
        let metrics = Metrics::local();
        let fake = Fake::new([slow(Duration::from_secs(10), ok())]);
        let service = layer(Duration::from_millis(200)).layer(fake.wrapped());

        let started = Instant::now();
        let result = service.oneshot(()).await;

        assert!(
            matches!(
                result,
                Err(ResilienceError::Timeout {
                    downstream: "inventory"
                })
            ),
            "{result:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(
            metrics.value(r#"shipshape_call_timeouts_total{downstream="inventory"}"#),
            Some(1.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn answers_in_time_pass_through() {
        let fake = Fake::new([
            slow(Duration::from_millis(199), ok()),
            slow(Duration::from_millis(199), fail(Code::NotFound)),
        ]);
        let service = layer(Duration::from_millis(200)).layer(fake.wrapped());

        let started = Instant::now();
        service.clone().oneshot(()).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(199));
        let result = service.oneshot(()).await;
        assert!(
            matches!(&result, Err(ResilienceError::Inner(s)) if s.code() == Code::NotFound),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_waits_for_the_answer() {
        let fake = Fake::new([slow(Duration::from_secs(10), ok())]);
        let service = TimeoutLayer::new(
            "inventory",
            TimeoutConfig {
                enabled: false,
                duration: Duration::from_millis(200),
            },
        )
        .layer(fake.wrapped());

        let started = Instant::now();
        service.oneshot(()).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
