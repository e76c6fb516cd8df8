//! Retries of failed idempotent calls, so a dropped connection or a
//! restarting replica does not fail the user's request. Only transient
//! failures are retried ([`crate::FailureClass::Transient`] and timeouts),
//! and only for calls marked [`Idempotency::Idempotent`]: repeating a
//! non-idempotent call could apply it twice. A call that was never sent
//! ([`crate::FailureClass::Unsent`]: its connection was closing) is sent
//! again whatever it does.
//!
//! Before retry `k` (1 for the first) the layer sleeps a delay drawn
//! uniformly from `[0, min(cap, base·2^(k−1))]` ("full jitter"), so callers
//! that failed together do not come back together.
//!
//! Retries multiply the load on a downstream exactly when it struggles, so
//! a **retry budget** per downstream caps them, in the spirit of Finagle's
//! and Linkerd's: over the last [`BUDGET_WINDOW_SECS`] seconds, retries may
//! reach `budget_percent` of the requests, plus `min_per_second` retries in
//! any second, so a downstream with little traffic can still be retried. A
//! retry the budget refuses is not made: the caller gets the last error.
//! Every request through the layer counts, idempotent or not.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use shipshape_runtime::Backoff;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::config::Vars;
use crate::{Classify, ResilienceError, telemetry};

/// Length of the retry budget's sliding window.
pub const BUDGET_WINDOW_SECS: u64 = 10;

/// `{PREFIX}_RETRY_ENABLED` (default `true`), `{PREFIX}_RETRY_MAX_ATTEMPTS`
/// (default 3), `{PREFIX}_RETRY_BASE_MS` (default 50),
/// `{PREFIX}_RETRY_CAP_MS` (default 2000), `{PREFIX}_RETRY_BUDGET_PERCENT`
/// (default 20) and `{PREFIX}_RETRY_MIN_PER_SECOND` (default 10).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    pub enabled: bool,
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; it doubles for each next one.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
    /// Retries allowed as a percentage of requests (see the module docs).
    pub budget_percent: u32,
    /// Retries allowed in any second regardless of the percentage.
    pub min_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: 3,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
            budget_percent: 20,
            min_per_second: 10,
        }
    }
}

impl RetryConfig {
    pub fn from_env(prefix: &str) -> anyhow::Result<Self> {
        Self::from_env_over(prefix, Self::default())
    }

    /// [`Self::from_env`] over the service's own defaults `default`
    /// instead of the crate's.
    pub fn from_env_over(prefix: &str, default: Self) -> anyhow::Result<Self> {
        let vars = Vars::new(prefix);
        Ok(Self {
            enabled: vars.get("RETRY_ENABLED", default.enabled)?,
            max_attempts: vars.within("RETRY_MAX_ATTEMPTS", default.max_attempts, 1..=100)?,
            base: vars.millis("RETRY_BASE_MS", default.base)?,
            cap: vars.millis("RETRY_CAP_MS", default.cap)?,
            budget_percent: vars.get("RETRY_BUDGET_PERCENT", default.budget_percent)?,
            min_per_second: vars.get("RETRY_MIN_PER_SECOND", default.min_per_second)?,
        })
    }
}

/// Whether a call may be repeated without changing its effect: reads, and
/// writes carrying an idempotency key the downstream deduplicates on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    Idempotent,
    NotIdempotent,
}

/// Wraps services in [`Retry`]s sharing one budget: clones of the layer,
/// and layers made by [`RetryLayer::with_idempotency`], spend from it too.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    shared: Arc<Shared>,
    idempotency: Idempotency,
}

#[derive(Debug)]
struct Shared {
    downstream: &'static str,
    config: RetryConfig,
    budget: Mutex<Budget>,
}

impl RetryLayer {
    pub fn new(downstream: &'static str, config: RetryConfig, idempotency: Idempotency) -> Self {
        telemetry::register_counter(telemetry::RETRIES, downstream);
        telemetry::register_counter(telemetry::RETRY_BUDGET_EXHAUSTED, downstream);
        Self {
            shared: Arc::new(Shared {
                downstream,
                config,
                budget: Mutex::new(Budget::new(Instant::now())),
            }),
            idempotency,
        }
    }

    /// A layer for calls of another kind, spending from the same budget.
    pub fn with_idempotency(&self, idempotency: Idempotency) -> Self {
        Self {
            shared: self.shared.clone(),
            idempotency,
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            shared: self.shared.clone(),
            idempotency: self.idempotency,
        }
    }
}

/// Repeats a failed call while another attempt may succeed and do no harm
/// (an idempotent call's transient error or timeout; any call never sent),
/// attempts remain and the budget allows. The request is cloned for each
/// attempt.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
    idempotency: Idempotency,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Req, E> Service<Req> for Retry<S>
where
    S: Service<Req, Error = ResilienceError<E>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Clone + Send + 'static,
    E: Classify + Send + 'static,
{
    type Response = S::Response;
    type Error = ResilienceError<E>;
    type Future = BoxFuture<Result<S::Response, ResilienceError<E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if !self.shared.config.enabled {
            return Box::pin(self.inner.call(request));
        }
        self.shared.deposit();
        let idempotency = self.idempotency;
        // The ready service goes with this call; this one keeps a fresh
        // clone (which is not ready yet).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                let result = inner.call(request.clone()).await;
                match &result {
                    Err(error) if error.is_retryable(idempotency) => {}
                    _ => return result,
                }
                if attempt >= shared.config.max_attempts || !shared.withdraw() {
                    return result;
                }
                metrics::counter!(telemetry::RETRIES, "downstream" => shared.downstream)
                    .increment(1);
                tokio::time::sleep(shared.backoff(attempt)).await;
                poll_fn(|cx| inner.poll_ready(cx)).await?;
                attempt += 1;
            }
        })
    }
}

impl Shared {
    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        // The budget stays consistent even if a holder panicked.
        self.budget.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deposit(&self) {
        self.budget().deposit(Instant::now());
    }

    /// Takes one retry from the budget, or counts that it was spent.
    fn withdraw(&self) -> bool {
        let config = &self.config;
        let granted =
            self.budget()
                .withdraw(Instant::now(), config.budget_percent, config.min_per_second);
        if !granted {
            metrics::counter!(telemetry::RETRY_BUDGET_EXHAUSTED, "downstream" => self.downstream)
                .increment(1);
        }
        granted
    }

    /// The full-jitter delay before retry `retry` (1 for the first).
    fn backoff(&self, retry: u32) -> Duration {
        Backoff::new(self.config.base, self.config.cap).delay(retry)
    }
}

/// Requests and retries per second over the last [`BUDGET_WINDOW_SECS`]
/// seconds, in a ring indexed by the second since `epoch`. Counting in
/// whole numbers keeps the ratio exact.
#[derive(Debug)]
struct Budget {
    epoch: Instant,
    seconds: [Second; BUDGET_WINDOW_SECS as usize],
}

#[derive(Clone, Copy, Debug, Default)]
struct Second {
    /// Which second since the epoch this slot counts.
    index: u64,
    requests: u64,
    /// Retries granted by the percentage.
    retries: u64,
    /// Retries granted by the per-second minimum.
    minimum_retries: u32,
}

impl Budget {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            seconds: [Second::default(); BUDGET_WINDOW_SECS as usize],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// The slot of the current second, emptied if it held an older one.
    fn current(&mut self, now: Instant) -> &mut Second {
        let index = self.index(now);
        let slot = &mut self.seconds[(index % BUDGET_WINDOW_SECS) as usize];
        if slot.index != index {
            *slot = Second {
                index,
                ..Second::default()
            };
        }
        slot
    }

    fn deposit(&mut self, now: Instant) {
        self.current(now).requests += 1;
    }

    fn withdraw(&mut self, now: Instant, percent: u32, min_per_second: u32) -> bool {
        let index = self.index(now);
        let (requests, retries) = self
            .seconds
            .iter()
            .filter(|second| index.saturating_sub(second.index) < BUDGET_WINDOW_SECS)
            .fold((0, 0), |(requests, retries), second| {
                (requests + second.requests, retries + second.retries)
            });
        let current = self.current(now);
        if (retries + 1).saturating_mul(100) <= requests.saturating_mul(u64::from(percent)) {
            current.retries += 1;
            true
        } else if current.minimum_retries < min_per_second {
            current.minimum_retries += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tonic::{Code, Status};
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{Fake, Metrics, NeverSent, fail, ok};

    fn config() -> RetryConfig {
        RetryConfig {
            base: Duration::from_millis(10),
            ..RetryConfig::default()
        }
    }

    fn idempotent(config: RetryConfig) -> RetryLayer {
        RetryLayer::new("inventory", config, Idempotency::Idempotent)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_transient_failure_until_it_passes() {
        let fake = Fake::new([fail(Code::Unavailable), fail(Code::Unavailable), ok()]);
        let service = idempotent(config()).layer(fake.wrapped());

        service.oneshot(()).await.unwrap();

        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_maximum_attempts() {
        let metrics = Metrics::local();
        let fake = Fake::new([fail(Code::Unavailable)]);
        let service = idempotent(config()).layer(fake.wrapped());

        let result = service.oneshot(()).await;

        assert!(
            matches!(&result, Err(ResilienceError::Inner(s)) if s.code() == Code::Unavailable),
            "{result:?}"
        );
        assert_eq!(fake.calls(), 3);
        assert_eq!(
            metrics.value(r#"shipshape_retries_total{downstream="inventory"}"#),
            Some(2.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_a_call_that_is_not_idempotent() {
        let fake = Fake::new([fail(Code::Unavailable), ok()]);
        let layer = idempotent(config()).with_idempotency(Idempotency::NotIdempotent);
        let service = layer.layer(fake.wrapped());

        let result = service.oneshot(()).await;

        assert!(result.is_err());
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_again_a_call_that_never_left_even_one_that_is_not_idempotent() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let downstream = tower::service_fn(move |()| {
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                match first {
                    true => Err(ResilienceError::Inner(NeverSent)),
                    false => Ok(()),
                }
            }
        });
        let layer = idempotent(config()).with_idempotency(Idempotency::NotIdempotent);

        layer.layer(downstream).oneshot(()).await.unwrap();

        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_a_permanent_error() {
        let fake = Fake::new([fail(Code::InvalidArgument), ok()]);
        let service = idempotent(config()).layer(fake.wrapped());

        let result = service.oneshot(()).await;

        assert!(result.is_err());
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_breaker_or_bulkhead_refusals() {
        let refusals: [fn() -> ResilienceError<Status>; 2] = [
            || ResilienceError::CircuitOpen {
                downstream: "inventory",
            },
            || ResilienceError::BulkheadFull {
                downstream: "inventory",
            },
        ];
        for refusal in refusals {
            let calls = Arc::new(AtomicUsize::new(0));
            let counted = calls.clone();
            let inner = tower::service_fn(move |()| {
                counted.fetch_add(1, Ordering::Relaxed);
                let error = refusal();
                async move { Err::<(), _>(error) }
            });
            let service = idempotent(config()).layer(inner);

            let result = service.oneshot(()).await;

            assert!(result.is_err());
            assert_eq!(calls.load(Ordering::Relaxed), 1, "{result:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_makes_one_attempt() {
        let fake = Fake::new([fail(Code::Unavailable), ok()]);
        let service = idempotent(RetryConfig {
            enabled: false,
            ..config()
        })
        .layer(fake.wrapped());

        assert!(service.oneshot(()).await.is_err());
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_delays_stay_within_their_jittered_ceilings() {
        fastrand::seed(7);
        let fake = Fake::new([fail(Code::Unavailable)]);
        let service = idempotent(RetryConfig {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(250),
            // Out of the way: this test is about the delays.
            budget_percent: 1000,
            ..RetryConfig::default()
        })
        .layer(fake.wrapped());
        let ceilings = [100, 200, 250, 250].map(Duration::from_millis);

        let mut gaps = Vec::new();
        for _ in 0..50 {
            let before = fake.calls();
            assert!(service.clone().oneshot(()).await.is_err());
            let times = fake.call_times();
            assert_eq!(times.len() - before, 5);
            let attempts = &times[before..];
            gaps.extend(attempts.windows(2).map(|pair| pair[1] - pair[0]));
        }

        for (i, gap) in gaps.iter().enumerate() {
            assert!(
                *gap <= ceilings[i % 4],
                "retry {} waited {gap:?}",
                i % 4 + 1
            );
        }
        // Jittered: short waits happen at every step, and later steps do
        // use their larger ceilings.
        for step in 0..4 {
            let waits: Vec<_> = gaps.iter().skip(step).step_by(4).collect();
            assert!(waits.iter().any(|gap| **gap < ceilings[step] / 2));
            let previous = ceilings[step.saturating_sub(1)];
            if step > 0 && previous < ceilings[step] {
                assert!(waits.iter().any(|gap| **gap > previous), "step {step}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries_at_a_share_of_requests_plus_a_minimum() {
        let metrics = Metrics::local();
        let fake = Fake::new([fail(Code::Unavailable)]);
        let service = idempotent(RetryConfig {
            max_attempts: 10,
            // No delays, so every request falls into the same second.
            base: Duration::ZERO,
            ..RetryConfig::default()
        })
        .layer(fake.wrapped());

        for _ in 0..100 {
            assert!(service.clone().oneshot(()).await.is_err());
        }

        // Without the budget: 900 retries. With it: 20 % of 100 requests,
        // plus the 10 any second allows.
        assert_eq!(fake.calls() - 100, 20 + 10);
        assert_eq!(
            metrics.value(r#"shipshape_retries_total{downstream="inventory"}"#),
            Some(30.0)
        );
        // Every request but the first (which used its 10 attempts) wanted
        // another retry.
        assert_eq!(
            metrics.value(r#"shipshape_retry_budget_exhausted_total{downstream="inventory"}"#),
            Some(99.0)
        );

        // A new second brings new minimum retries: enough for all 9 of
        // the next request.
        tokio::time::advance(Duration::from_secs(1)).await;
        let before = fake.calls();
        assert!(service.oneshot(()).await.is_err());
        assert_eq!(fake.calls() - before, 1 + 9);
    }

    #[test]
    fn old_requests_leave_the_budget_window() {
        let epoch = Instant::now();
        let mut budget = Budget::new(epoch);
        for _ in 0..10 {
            budget.deposit(epoch);
        }
        assert!(budget.withdraw(epoch, 10, 0));
        assert!(!budget.withdraw(epoch, 10, 0));

        let later = epoch + Duration::from_secs(BUDGET_WINDOW_SECS - 1);
        budget.deposit(later);
        assert!(
            !budget.withdraw(later, 10, 0),
            "the first retry still counts"
        );

        let expired = epoch + Duration::from_secs(BUDGET_WINDOW_SECS);
        for _ in 0..9 {
            budget.deposit(expired);
        }
        assert!(budget.withdraw(expired, 10, 0), "10 requests, no retries");
    }
}
