//! A circuit breaker per downstream: when most recent calls fail, stop
//! calling for a while. The failing downstream gets room to recover instead
//! of a stream of doomed calls, and callers fail in microseconds instead of
//! after a timeout each.
//!
//! - **Closed**: calls pass; their outcomes fill a window of the last
//!   `window` calls. Once it holds at least `min_calls`, a failure share of
//!   `failure_percent` or more opens the breaker.
//! - **Open**: calls fail with [`ResilienceError::CircuitOpen`] without
//!   reaching the downstream, for `open_for`.
//! - **Half-open**: up to `half_open_probes` calls go through as probes
//!   (any others are refused as if open). When all of them succeed the
//!   breaker closes with an empty window; a single failure opens it again
//!   for another `open_for`.
//!
//! Timeouts and transient errors are failures; permanent (client) errors
//! are successes, since the downstream answered; bulkhead refusals and
//! abandoned calls are not counted. The open period ends at the first call
//! or state query after it, so the state gauge of an idle downstream may
//! show "open" longer than `open_for`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::config::Vars;
use crate::{Classify, ResilienceError, telemetry};

/// `{PREFIX}_BREAKER_ENABLED` (default `true`), `{PREFIX}_BREAKER_WINDOW`
/// (default 20), `{PREFIX}_BREAKER_MIN_CALLS` (default 10),
/// `{PREFIX}_BREAKER_FAILURE_PERCENT` (default 50),
/// `{PREFIX}_BREAKER_OPEN_MS` (default 5000) and
/// `{PREFIX}_BREAKER_HALF_OPEN_PROBES` (default 3).
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    pub enabled: bool,
    /// How many of the latest calls the failure rate is computed over.
    pub window: usize,
    /// Calls the window must hold before the breaker may open; at most
    /// `window`, or it never opens (so `from_env` lowers the default to a
    /// smaller window).
    pub min_calls: usize,
    /// Share of failed calls in the window, in percent, that opens it.
    pub failure_percent: u32,
    /// How long it stays open before probing.
    pub open_for: Duration,
    /// Probe calls let through while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 20,
            min_calls: 10,
            failure_percent: 50,
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }
}

impl BreakerConfig {
    pub fn from_env(prefix: &str) -> anyhow::Result<Self> {
        Self::from_env_over(prefix, Self::default())
    }

    /// [`Self::from_env`] over the service's own defaults `default`
    /// instead of the crate's.
    pub fn from_env_over(prefix: &str, default: Self) -> anyhow::Result<Self> {
        let vars = Vars::new(prefix);
        let window = vars.within("BREAKER_WINDOW", default.window, 1..=10_000)?;
        Ok(Self {
            enabled: vars.get("BREAKER_ENABLED", default.enabled)?,
            window,
            min_calls: vars.within(
                "BREAKER_MIN_CALLS",
                default.min_calls.min(window),
                1..=window,
            )?,
            failure_percent: vars.within(
                "BREAKER_FAILURE_PERCENT",
                default.failure_percent,
                1..=100,
            )?,
            open_for: vars.millis("BREAKER_OPEN_MS", default.open_for)?,
            half_open_probes: vars.within(
                "BREAKER_HALF_OPEN_PROBES",
                default.half_open_probes,
                1..=1_000,
            )?,
        })
    }
}

/// Where a breaker stands, for readiness checks and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Every transition a breaker makes: it opens when closed calls fail, lets
/// probes through once open long enough, and closes or reopens on them.
const TRANSITIONS: [(BreakerState, BreakerState); 4] = [
    (BreakerState::Closed, BreakerState::Open),
    (BreakerState::Open, BreakerState::HalfOpen),
    (BreakerState::HalfOpen, BreakerState::Closed),
    (BreakerState::HalfOpen, BreakerState::Open),
];

impl BreakerState {
    fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the state gauge.
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// Wraps services in [`CircuitBreaker`]s sharing one breaker: a failure
/// through any of them counts for all.
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    breaker: Arc<Breaker>,
}

impl BreakerLayer {
    /// A closed breaker; its state gauge starts at 0, and its counters at
    /// 0 for every transition it can make, so dashboards show the
    /// downstream before its first transition.
    pub fn new(downstream: &'static str, config: BreakerConfig) -> Self {
        metrics::gauge!(telemetry::BREAKER_STATE, "downstream" => downstream)
            .set(BreakerState::Closed.gauge());
        telemetry::register_counter(telemetry::BREAKER_REJECTIONS, downstream);
        for (from, to) in TRANSITIONS {
            metrics::counter!(
                telemetry::BREAKER_TRANSITIONS,
                "downstream" => downstream,
                "from" => from.label(),
                "to" => to.label()
            )
            .increment(0);
        }
        let window = Window::new(config.window);
        Self {
            breaker: Arc::new(Breaker {
                downstream,
                config,
                state: Mutex::new(State {
                    phase: Phase::Closed(window),
                    generation: 0,
                }),
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// Fails calls fast while the breaker is open and reports every outcome to
/// it.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S, Req, E> Service<Req> for CircuitBreaker<S>
where
    S: Service<Req, Error = ResilienceError<E>>,
    E: Classify,
{
    type Response = S::Response;
    type Error = ResilienceError<E>;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let downstream = self.breaker.downstream;
        if !self.breaker.config.enabled {
            return ResponseFuture {
                inner: Some(self.inner.call(request)),
                ticket: None,
                downstream,
            };
        }
        match self.breaker.admit() {
            Some(generation) => ResponseFuture {
                inner: Some(self.inner.call(request)),
                ticket: Some(Ticket {
                    breaker: Some(self.breaker.clone()),
                    generation,
                }),
                downstream,
            },
            None => {
                metrics::counter!(telemetry::BREAKER_REJECTIONS, "downstream" => downstream)
                    .increment(1);
                ResponseFuture {
                    inner: None,
                    ticket: None,
                    downstream,
                }
            }
        }
    }
}

pin_project! {
    /// The admitted call, reporting its outcome when it completes; or the
    /// refusal (`inner` is `None`).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        ticket: Option<Ticket>,
        downstream: &'static str,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, ResilienceError<E>>>,
    E: Classify,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(ResilienceError::CircuitOpen {
                downstream: this.downstream,
            }));
        };
        let result = ready!(inner.poll(cx));
        if let Some(ticket) = this.ticket.take() {
            let failure = match &result {
                Ok(_) => Some(false),
                Err(error) => error.is_breaker_failure(),
            };
            ticket.finish(failure);
        }
        Poll::Ready(result)
    }
}

/// An admitted call's claim to report its outcome. Dropped unfinished (the
/// caller gave up on the call), it reports nothing, but gives a probe slot
/// back, so an abandoned probe cannot keep the breaker half-open forever.
struct Ticket {
    breaker: Option<Arc<Breaker>>,
    /// The phase the call was admitted in; outcomes of calls from an
    /// earlier phase are ignored.
    generation: u64,
}

impl Ticket {
    /// `Some(true)` a failure, `Some(false)` a success, `None` not counted.
    fn finish(mut self, failure: Option<bool>) {
        if let Some(breaker) = self.breaker.take() {
            breaker.record(self.generation, failure);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            breaker.record(self.generation, None);
        }
    }
}

#[derive(Debug)]
struct Breaker {
    downstream: &'static str,
    config: BreakerConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Incremented at each transition.
    generation: u64,
}

#[derive(Debug)]
enum Phase {
    Closed(Window),
    Open { since: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Phase::Closed(_) => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

impl Breaker {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panic elsewhere
        // while holding the lock does not invalidate it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> BreakerState {
        let mut state = self.lock();
        self.end_open_period(&mut state);
        state.phase.state()
    }

    /// The generation to report to, or `None` when the call is refused.
    fn admit(&self) -> Option<u64> {
        let mut state = self.lock();
        self.end_open_period(&mut state);
        let generation = state.generation;
        let probes = self.config.half_open_probes.max(1);
        match &mut state.phase {
            Phase::Closed(_) => Some(generation),
            Phase::Open { .. } => None,
            Phase::HalfOpen { admitted, .. } if *admitted < probes => {
                *admitted += 1;
                Some(generation)
            }
            Phase::HalfOpen { .. } => None,
        }
    }

    fn record(&self, generation: u64, failure: Option<bool>) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        let config = &self.config;
        let reopen = || Phase::Open {
            since: Instant::now(),
        };
        let next = match (&mut state.phase, failure) {
            (Phase::Closed(window), Some(failed)) => {
                window.push(failed);
                window
                    .tripped(config.min_calls, config.failure_percent)
                    .then(reopen)
            }
            (Phase::HalfOpen { .. }, Some(true)) => Some(reopen()),
            (Phase::HalfOpen { succeeded, .. }, Some(false)) => {
                *succeeded += 1;
                (*succeeded >= config.half_open_probes.max(1))
                    .then(|| Phase::Closed(Window::new(config.window)))
            }
            (Phase::HalfOpen { admitted, .. }, None) => {
                *admitted = admitted.saturating_sub(1);
                None
            }
            (Phase::Closed(_) | Phase::Open { .. }, _) => None,
        };
        if let Some(next) = next {
            self.transition(&mut state, next);
        }
    }

    fn end_open_period(&self, state: &mut State) {
        if let Phase::Open { since } = state.phase
            && since.elapsed() >= self.config.open_for
        {
            let probing = Phase::HalfOpen {
                admitted: 0,
                succeeded: 0,
            };
            self.transition(state, probing);
        }
    }

    fn transition(&self, state: &mut State, next: Phase) {
        let from = state.phase.state();
        let to = next.state();
        state.phase = next;
        state.generation += 1;
        let downstream = self.downstream;
        metrics::gauge!(telemetry::BREAKER_STATE, "downstream" => downstream).set(to.gauge());
        metrics::counter!(
            telemetry::BREAKER_TRANSITIONS,
            "downstream" => downstream,
            "from" => from.label(),
            "to" => to.label()
        )
        .increment(1);
        if to == BreakerState::Open {
            tracing::warn!(downstream, from = from.label(), "circuit breaker opened");
        } else {
            tracing::info!(
                downstream,
                from = from.label(),
                to = to.label(),
                "circuit breaker changed state"
            );
        }
    }
}

/// Outcomes of the latest calls, oldest first (`true`: failed).
#[derive(Debug)]
struct Window {
    outcomes: VecDeque<bool>,
    failures: usize,
    size: usize,
}

impl Window {
    fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            outcomes: VecDeque::with_capacity(size),
            failures: 0,
            size,
        }
    }

    fn push(&mut self, failed: bool) {
        if self.outcomes.len() == self.size && self.outcomes.pop_front() == Some(true) {
            self.failures -= 1;
        }
        self.outcomes.push_back(failed);
        if failed {
            self.failures += 1;
        }
    }

    fn tripped(&self, min_calls: usize, failure_percent: u32) -> bool {
        let calls = self.outcomes.len();
        calls >= min_calls.max(1) && self.failures * 100 >= failure_percent as usize * calls
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{Fake, Metrics, fail, ok, slow};

    const OPEN_FOR: Duration = Duration::from_secs(5);

    async fn call<S>(service: &S) -> Result<(), ResilienceError<Status>>
    where
        S: Service<(), Response = (), Error = ResilienceError<Status>> + Clone,
    {
        service.clone().oneshot(()).await
    }

    fn failures(n: usize) -> impl Iterator<Item = crate::testing::Step> {
        std::iter::repeat_n(fail(Code::Unavailable), n)
    }

    fn successes(n: usize) -> impl Iterator<Item = crate::testing::Step> {
        std::iter::repeat_n(ok(), n)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_minimum_calls_when_half_of_them_failed() {
        let fake = Fake::new(failures(9).chain([ok()]));
        let layer = BreakerLayer::new("inventory", BreakerConfig::default());
        let service = layer.layer(fake.wrapped());

        for _ in 0..9 {
            assert!(call(&service).await.is_err());
        }
        assert_eq!(layer.state(), BreakerState::Closed, "9 calls are too few");

        call(&service).await.unwrap();
        assert_eq!(layer.state(), BreakerState::Open);
        assert_eq!(fake.calls(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_rate_is_taken_over_a_sliding_window() {
        let fake = Fake::new(successes(11).chain(failures(10)));
        let layer = BreakerLayer::new("inventory", BreakerConfig::default());
        let service = layer.layer(fake.wrapped());

        for _ in 0..20 {
            let _ = call(&service).await;
        }
        assert_eq!(layer.state(), BreakerState::Closed, "9 failures of 20");

        // The oldest success leaves the window: 10 failures of 20.
        assert!(call(&service).await.is_err());
        assert_eq!(layer.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_calls_while_open_without_calling_the_downstream() {
        let metrics = Metrics::local();
        let fake = Fake::new(failures(10).chain([ok()]));
        let layer = BreakerLayer::new("inventory", BreakerConfig::default());
        let service = layer.layer(fake.wrapped());
        for _ in 0..10 {
            assert!(call(&service).await.is_err());
        }

        let result = call(&service).await;

        assert!(
            matches!(
                result,
                Err(ResilienceError::CircuitOpen {
                    downstream: "inventory"
                })
            ),
            "{result:?}"
        );
        assert_eq!(fake.calls(), 10);
        assert_eq!(
            metrics.value(r#"shipshape_breaker_rejections_total{downstream="inventory"}"#),
            Some(1.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_opens_after_the_open_period_and_closes_when_the_probes_succeed() {
        let metrics = Metrics::local();
        let fake = Fake::new(failures(10).chain([ok()]));
        let layer = BreakerLayer::new("inventory", BreakerConfig::default());
        let service = layer.layer(fake.wrapped());
        let gauge = r#"shipshape_breaker_state{downstream="inventory"}"#;
        assert_eq!(metrics.value(gauge), Some(0.0));
        for _ in 0..10 {
            assert!(call(&service).await.is_err());
        }
        assert_eq!(metrics.value(gauge), Some(1.0));

        tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert_eq!(layer.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(layer.state(), BreakerState::HalfOpen);
        assert_eq!(metrics.value(gauge), Some(2.0));

        for probe in 1..=3 {
            call(&service).await.unwrap();
            let expected = if probe < 3 {
                BreakerState::HalfOpen
            } else {
                BreakerState::Closed
            };
            assert_eq!(layer.state(), expected, "after probe {probe}");
        }
        assert_eq!(metrics.value(gauge), Some(0.0));
        for (from, to) in [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
        ] {
            let series = format!(
                r#"shipshape_breaker_transitions_total{{downstream="inventory",from="{from}",to="{to}"}}"#
            );
            assert_eq!(metrics.value(&series), Some(1.0), "{series}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closing_starts_a_fresh_window() {
        let fake = Fake::new(failures(10).chain(successes(3)).chain(failures(9)));
        let layer = BreakerLayer::new("inventory", BreakerConfig::default());
        let service = layer.layer(fake.wrapped());
        for _ in 0..10 {
            assert!(call(&service).await.is_err());
        }
        tokio::time::advance(OPEN_FOR).await;
        for _ in 0..3 {
            call(&service).await.unwrap();
        }
        assert_eq!(layer.state(), BreakerState::Closed);

        for _ in 0..9 {
            assert!(call(&service).await.is_err());
        }
        assert_eq!(layer.state(), BreakerState::Closed, "9 calls are too few");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_it_for_another_open_period() {
        let metrics = Metrics::local();
        let fake = Fake::new(failures(11).chain([ok()]));
        let layer = BreakerLayer::new("inventory", BreakerConfig::default());
        let service = layer.layer(fake.wrapped());
        for _ in 0..10 {
            assert!(call(&service).await.is_err());
        }
        tokio::time::advance(OPEN_FOR).await;

        assert!(call(&service).await.is_err());

        assert_eq!(layer.state(), BreakerState::Open);
        assert!(matches!(
            call(&service).await,
            Err(ResilienceError::CircuitOpen { .. })
        ));
        tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert_eq!(layer.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(layer.state(), BreakerState::HalfOpen);
        assert_eq!(fake.calls(), 11);
        assert_eq!(
            metrics.value(
                r#"shipshape_breaker_transitions_total{downstream="inventory",from="half_open",to="open"}"#
            ),
            Some(1.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_only_the_probes_through() {
        let fake = Fake::new(failures(10).chain([slow(Duration::from_secs(1), ok())]));
        let layer = BreakerLayer::new("inventory", BreakerConfig::default());
        let service = layer.layer(fake.wrapped());
        for _ in 0..10 {
            assert!(call(&service).await.is_err());
        }
        tokio::time::advance(OPEN_FOR).await;
        let probes: Vec<_> = (0..3)
            .map(|_| tokio::spawn(service.clone().oneshot(())))
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;

        let result = call(&service).await;

        assert!(
            matches!(result, Err(ResilienceError::CircuitOpen { .. })),
            "{result:?}"
        );
        assert_eq!(fake.calls(), 13);
        for probe in probes {
            probe.await.unwrap().unwrap();
        }
        assert_eq!(layer.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_gives_its_slot_back() {
        let fake = Fake::new(failures(10).chain([slow(Duration::from_secs(1), ok())]));
        let layer = BreakerLayer::new(
            "inventory",
            BreakerConfig {
                half_open_probes: 1,
                ..BreakerConfig::default()
            },
        );
        let mut service = layer.layer(fake.wrapped());
        for _ in 0..10 {
            assert!(call(&service).await.is_err());
        }
        tokio::time::advance(OPEN_FOR).await;

        let abandoned = service.ready().await.unwrap().call(());
        assert!(matches!(
            call(&service).await,
            Err(ResilienceError::CircuitOpen { .. })
        ));
        drop(abandoned);

        call(&service).await.unwrap();
        assert_eq!(layer.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_count_as_successes() {
        let client_errors = [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::AlreadyExists,
        ];
        let fake = Fake::new(
            client_errors
                .iter()
                .cycle()
                .take(11)
                .map(|code| fail(*code))
                .chain(failures(9)),
        );
        let layer = BreakerLayer::new("inventory", BreakerConfig::default());
        let service = layer.layer(fake.wrapped());

        for _ in 0..20 {
            assert!(call(&service).await.is_err());
        }

        assert_eq!(layer.state(), BreakerState::Closed, "9 failures of 20");
        assert_eq!(fake.calls(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn bulkhead_refusals_are_not_counted() {
        // 10 refusals, 9 failures, 1 success. Counted as failures, the
        // refusals would open the breaker at once; counted as successes,
        // never (9 failures of 20); not counted, at the success (9 of 10).
        let mut script = std::iter::repeat_n(None, 10)
            .chain(std::iter::repeat_n(Some(Err(Code::Unavailable)), 9))
            .chain([Some(Ok(()))]);
        let inner = tower::service_fn(move |()| {
            let result = match script.next().flatten() {
                None => Err(ResilienceError::BulkheadFull {
                    downstream: "inventory",
                }),
                Some(Ok(())) => Ok(()),
                Some(Err(code)) => Err(ResilienceError::Inner(Status::new(code, "down"))),
            };
            async move { result }
        });
        let layer = BreakerLayer::new("inventory", BreakerConfig::default());
        // Called in place: a clone would copy the script.
        let mut service = layer.layer(inner);

        for _ in 0..19 {
            assert!(service.ready().await.unwrap().call(()).await.is_err());
        }
        assert_eq!(layer.state(), BreakerState::Closed);

        service.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(layer.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_never_opens() {
        let fake = Fake::new(failures(1));
        let layer = BreakerLayer::new(
            "inventory",
            BreakerConfig {
                enabled: false,
                ..BreakerConfig::default()
            },
        );
        let service = layer.layer(fake.wrapped());

        for _ in 0..30 {
            assert!(call(&service).await.is_err());
        }

        assert_eq!(layer.state(), BreakerState::Closed);
        assert_eq!(fake.calls(), 30);
    }
}
