//! One downstream's resilience state, and the layer that puts the whole
//! stack around any of its methods.

use tower::Layer;

use crate::ResilienceConfig;
use crate::breaker::{BreakerLayer, BreakerState, CircuitBreaker};
use crate::bulkhead::{Bulkhead, BulkheadLayer};
use crate::retry::{Idempotency, Retry, RetryLayer};
use crate::timeout::{Timeout, TimeoutLayer};

/// A dependency the service calls, such as `"inventory"`: created once at
/// startup, cloned freely. Every service wrapped through
/// [`Downstream::layer`] shares its breaker, bulkhead and retry budget, so
/// the calls of all methods judge and protect the same dependency.
#[derive(Clone, Debug)]
pub struct Downstream {
    retry: RetryLayer,
    breaker: BreakerLayer,
    timeout: TimeoutLayer,
    bulkhead: BulkheadLayer,
}

impl Downstream {
    /// `name` labels the metrics and names the downstream in errors.
    pub fn new(name: &'static str, config: ResilienceConfig) -> Self {
        Self {
            retry: RetryLayer::new(name, config.retry, Idempotency::NotIdempotent),
            breaker: BreakerLayer::new(name, config.breaker),
            timeout: TimeoutLayer::new(name, config.timeout),
            bulkhead: BulkheadLayer::new(name, config.bulkhead),
        }
    }

    /// The full stack for one method; `idempotency` says whether its calls
    /// may be retried.
    pub fn layer(&self, idempotency: Idempotency) -> ResilienceLayer {
        ResilienceLayer {
            retry: self.retry.with_idempotency(idempotency),
            breaker: self.breaker.clone(),
            timeout: self.timeout.clone(),
            bulkhead: self.bulkhead.clone(),
        }
    }

    /// For readiness checks and tests.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }
}

/// A service wrapped in the whole stack, outermost first.
pub type Resilient<S> = Retry<CircuitBreaker<Timeout<Bulkhead<S>>>>;

/// Wraps a service in `Retry → CircuitBreaker → Timeout → Bulkhead`,
/// sharing its [`Downstream`]'s state. See the crate docs for the order.
#[derive(Clone, Debug)]
pub struct ResilienceLayer {
    retry: RetryLayer,
    breaker: BreakerLayer,
    timeout: TimeoutLayer,
    bulkhead: BulkheadLayer,
}

impl<S> Layer<S> for ResilienceLayer {
    type Service = Resilient<S>;

    fn layer(&self, inner: S) -> Resilient<S> {
        let bulkhead = self.bulkhead.layer(inner);
        let timeout = self.timeout.layer(bulkhead);
        let breaker = self.breaker.layer(timeout);
        self.retry.layer(breaker)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;
    use tonic::Code;
    use tower::{Service, ServiceExt};

    use super::*;
    use crate::testing::{Fake, Metrics, fail, ok, slow};
    use crate::{BreakerConfig, BulkheadConfig, ResilienceError, TimeoutConfig};

    fn config(timeout: Duration) -> ResilienceConfig {
        ResilienceConfig {
            timeout: TimeoutConfig {
                enabled: true,
                duration: timeout,
            },
            ..ResilienceConfig::default()
        }
    }

    #[test]
    fn every_series_exists_at_zero_before_the_first_call() {
        let metrics = Metrics::local();
        let _downstream = Downstream::new("inventory", ResilienceConfig::default());

        let zero = |series: &str| {
            let labels = r#"{downstream="inventory"}"#;
            assert_eq!(
                metrics.value(&format!("{series}{labels}")),
                Some(0.0),
                "{series}: {}",
                metrics.render()
            );
        };
        zero("shipshape_retries_total");
        zero("shipshape_retry_budget_exhausted_total");
        zero("shipshape_call_timeouts_total");
        zero("shipshape_breaker_rejections_total");
        zero("shipshape_bulkhead_rejections_total");
        zero("shipshape_bulkhead_in_use");
        zero("shipshape_breaker_state");
        let transitions = metrics
            .render()
            .lines()
            .filter(|line| {
                line.starts_with("shipshape_breaker_transitions_total{") && line.ends_with(" 0")
            })
            .count();
        assert_eq!(transitions, 4, "{}", metrics.render());
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_counts_timeouts_as_failures() {
        let metrics = Metrics::local();
        let fake = Fake::new([slow(Duration::from_secs(5), ok())]);
        let downstream = Downstream::new("inventory", config(Duration::from_millis(100)));
        let service = downstream
            .layer(Idempotency::NotIdempotent)
            .layer(fake.service());

        for _ in 0..10 {
            let result = service.clone().oneshot(()).await;
            assert!(
                matches!(result, Err(ResilienceError::Timeout { .. })),
                "{result:?}"
            );
        }

        assert_eq!(downstream.breaker_state(), BreakerState::Open);
        assert_eq!(
            metrics.value(r#"shipshape_call_timeouts_total{downstream="inventory"}"#),
            Some(10.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_gets_its_own_timeout() {
        let fake = Fake::new([slow(Duration::from_secs(5), ok()), ok()]);
        let downstream = Downstream::new("inventory", config(Duration::from_millis(100)));
        let service = downstream
            .layer(Idempotency::Idempotent)
            .layer(fake.service());

        let started = Instant::now();
        service.oneshot(()).await.unwrap();

        assert_eq!(fake.calls(), 2);
        let elapsed = started.elapsed();
        // The timed-out attempt, then at most the first backoff ceiling.
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(150), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_once_the_breaker_opens() {
        let fake = Fake::new([fail(Code::Unavailable)]);
        let downstream = Downstream::new("inventory", ResilienceConfig::default());
        let service = downstream
            .layer(Idempotency::Idempotent)
            .layer(fake.service());

        for _ in 0..3 {
            assert!(service.clone().oneshot(()).await.is_err());
        }
        // Its first attempt is the breaker's tenth call: the retry is refused.
        let result = service.oneshot(()).await;

        assert!(
            matches!(result, Err(ResilienceError::CircuitOpen { .. })),
            "{result:?}"
        );
        assert_eq!(fake.calls(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_methods_of_a_downstream_share_its_breaker_and_bulkhead() {
        let reads = Fake::new([slow(Duration::from_secs(1), ok())]);
        let writes = Fake::new([fail(Code::Unavailable)]);
        let downstream = Downstream::new(
            "inventory",
            ResilienceConfig {
                bulkhead: BulkheadConfig {
                    max_concurrent: 1,
                    ..BulkheadConfig::default()
                },
                ..ResilienceConfig::default()
            },
        );
        let read = downstream
            .layer(Idempotency::Idempotent)
            .layer(reads.service());
        let write = downstream
            .layer(Idempotency::NotIdempotent)
            .layer(writes.service());

        let reading = tokio::spawn(read.clone().oneshot(()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let result = write.clone().oneshot(()).await;
        assert!(
            matches!(result, Err(ResilienceError::BulkheadFull { .. })),
            "{result:?}"
        );
        reading.await.unwrap().unwrap();

        // With the read's success: 9 failures of 10 calls.
        for _ in 0..9 {
            assert!(write.clone().oneshot(()).await.is_err());
        }
        assert_eq!(writes.calls(), 9, "writes are not retried");
        assert_eq!(downstream.breaker_state(), BreakerState::Open);
        let result = read.oneshot(()).await;
        assert!(
            matches!(result, Err(ResilienceError::CircuitOpen { .. })),
            "{result:?}"
        );
        assert_eq!(reads.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_pattern_lets_its_failure_through() {
        let fake = Fake::new([fail(Code::Unavailable)]);
        let downstream = Downstream::new(
            "inventory",
            ResilienceConfig {
                breaker: BreakerConfig {
                    enabled: false,
                    ..BreakerConfig::default()
                },
                ..ResilienceConfig::default()
            },
        );
        let mut service = downstream
            .layer(Idempotency::NotIdempotent)
            .layer(fake.service());

        for _ in 0..20 {
            assert!(service.ready().await.unwrap().call(()).await.is_err());
        }

        assert_eq!(downstream.breaker_state(), BreakerState::Closed);
        assert_eq!(fake.calls(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_downstream_reports_a_closed_breaker_and_described_metrics() {
        let metrics = Metrics::local();
        crate::describe();

        let _downstream = Downstream::new("payments-psp", ResilienceConfig::default());

        assert_eq!(
            metrics.value(r#"shipshape_breaker_state{downstream="payments-psp"}"#),
            Some(0.0)
        );
        assert_eq!(
            metrics.value(r#"shipshape_bulkhead_in_use{downstream="payments-psp"}"#),
            Some(0.0)
        );
        let text = metrics.render();
        assert!(
            text.contains("# HELP shipshape_breaker_state Circuit breaker state"),
            "{text}"
        );
    }
}
