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
//! are successes, since the downstream answered; bulkhead refusals, calls
//! never sent (their connection was closing) and abandoned calls are not
//! counted. The open period ends at the first call
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
mod tests;
