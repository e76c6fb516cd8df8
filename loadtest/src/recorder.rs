//! Where every checkout's requests, errors and outcome are counted while a
//! run goes on: totals for the report, per-second windows for the timeline,
//! and a snapshot for the progress line.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::ErrorKind;
use crate::scenario::{Outcome, Path};
use crate::stats::{Latency, LatencySummary, nearest_rank, round3};

/// The API calls a checkout makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    ListProducts,
    ViewProduct,
    PlaceOrder,
    PollOrder,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::ListProducts,
        Endpoint::ViewProduct,
        Endpoint::PlaceOrder,
        Endpoint::PollOrder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ListProducts => "GET /api/v1/products",
            Endpoint::ViewProduct => "GET /api/v1/products/{sku}",
            Endpoint::PlaceOrder => "POST /api/v1/orders",
            Endpoint::PollOrder => "GET /api/v1/orders/{id}",
        }
    }
}

/// How a checkout ended.
#[derive(Debug)]
pub struct CheckoutEnd {
    pub path: Path,
    /// The terminal outcome, if the order was placed and became terminal.
    pub outcome: Option<Outcome>,
    /// `completed_at - created_at` of the terminal order.
    pub saga: Option<Duration>,
    /// From when the checkout was due to seeing its order terminal.
    pub checkout: Option<Duration>,
    /// Whether any of its requests failed (already counted by kind).
    pub request_failed: bool,
    /// A failure of the checkout as a whole: not terminal in time, or an
    /// outcome other than its path's.
    pub failure: Option<ErrorKind>,
}

/// How many requests to one endpoint succeeded and failed, and how long the
/// successful ones took.
#[derive(Default)]
struct EndpointStats {
    latency: Latency,
    errors: BTreeMap<ErrorKind, u64>,
}

/// One second of the run, by the time things happened.
#[derive(Clone, Default)]
struct Window {
    arrivals: u64,
    terminal: u64,
    failed: u64,
    /// Latencies of successful `POST /api/v1/orders`, in microseconds.
    place_micros: Vec<u32>,
    /// Saga latencies of orders seen terminal, in microseconds.
    saga_micros: Vec<u32>,
}

#[derive(Default)]
struct State {
    endpoints: BTreeMap<Endpoint, EndpointStats>,
    saga: Latency,
    checkout: Latency,
    /// How late checkouts started compared with when they were due: the
    /// generator's own health.
    start_lag: Latency,
    arrivals: u64,
    placed: u64,
    terminal: u64,
    not_terminal: u64,
    failed: u64,
    errors: BTreeMap<ErrorKind, u64>,
    /// The first failures of each kind, to say what went wrong.
    examples: BTreeMap<ErrorKind, Vec<String>>,
    outcomes: BTreeMap<Path, BTreeMap<String, u64>>,
    windows: Vec<Window>,
}

/// Examples kept per error kind.
const EXAMPLES_PER_KIND: usize = 3;

/// The run's counters. Shared by every checkout task; each update takes a
/// short lock, negligible next to a request.
pub struct Recorder {
    started: Instant,
    state: Mutex<State>,
}

/// What the progress line shows.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub arrivals: u64,
    pub terminal: u64,
    pub failed: u64,
    pub place_p99: Option<Duration>,
    pub saga_p99: Option<Duration>,
}

impl Recorder {
    /// Counts from `started`, the instant the first checkout is due.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            state: Mutex::default(),
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A panic elsewhere cannot leave the counters half-updated in a way
        // that matters more than losing the run's numbers.
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn window(state: &mut State, second: usize) -> &mut Window {
        if state.windows.len() <= second {
            state.windows.resize(second + 1, Window::default());
        }
        &mut state.windows[second]
    }

    fn second_of(&self, at: Instant) -> usize {
        at.saturating_duration_since(self.started).as_secs() as usize
    }

    /// A checkout that was due at `due` started at `started`.
    pub fn arrival(&self, due: Instant, started: Instant) {
        let second = self.second_of(due);
        self.with(|state| {
            state.arrivals += 1;
            state
                .start_lag
                .record(started.saturating_duration_since(due));
            Self::window(state, second).arrivals += 1;
        });
    }

    /// A checkout that was due at `due` was never started: the generator had
    /// too many in flight.
    pub fn overloaded(&self, due: Instant) {
        let second = self.second_of(due);
        self.with(|state| {
            state.arrivals += 1;
            state.failed += 1;
            *state
                .errors
                .entry(ErrorKind::GeneratorOverloaded)
                .or_default() += 1;
            let window = Self::window(state, second);
            window.arrivals += 1;
            window.failed += 1;
        });
    }

    /// A request to `endpoint` finished at `now` after `latency`; the
    /// latencies of successful and timed-out requests are recorded.
    pub fn request(
        &self,
        endpoint: Endpoint,
        latency: Duration,
        now: Instant,
        result: Result<(), (ErrorKind, &str)>,
    ) {
        let second = self.second_of(now);
        self.with(|state| {
            let stats = state.endpoints.entry(endpoint).or_default();
            match result {
                Ok(()) => {
                    stats.latency.record(latency);
                    if endpoint == Endpoint::PlaceOrder {
                        Self::window(state, second)
                            .place_micros
                            .push(micros(latency));
                    }
                }
                Err((kind, detail)) => {
                    // A timed-out request took at least this long: leaving
                    // it out would let the slowest requests vanish from the
                    // percentiles exactly when the system degrades. A fast
                    // refusal (429, 503) says nothing about how long the
                    // work takes and stays out.
                    if kind == ErrorKind::Timeout {
                        stats.latency.record(latency);
                    }
                    *stats.errors.entry(kind).or_default() += 1;
                    *state.errors.entry(kind).or_default() += 1;
                    let examples = state.examples.entry(kind).or_default();
                    if examples.len() < EXAMPLES_PER_KIND {
                        examples.push(format!("{}: {detail}", endpoint.name()));
                    }
                }
            }
        });
    }

    /// An order was accepted.
    pub fn placed(&self) {
        self.with(|state| state.placed += 1);
    }

    /// A checkout ended at `now`.
    pub fn finished(&self, end: CheckoutEnd, now: Instant) {
        let second = self.second_of(now);
        self.with(|state| {
            if let Some(outcome) = &end.outcome {
                state.terminal += 1;
                *state
                    .outcomes
                    .entry(end.path)
                    .or_default()
                    .entry(outcome.to_string())
                    .or_default() += 1;
                let window = Self::window(state, second);
                window.terminal += 1;
                if let Some(saga) = end.saga {
                    window.saga_micros.push(micros(saga));
                }
                if let Some(saga) = end.saga {
                    state.saga.record(saga);
                }
                if let Some(checkout) = end.checkout {
                    state.checkout.record(checkout);
                }
            }
            if end.failure == Some(ErrorKind::NotTerminal) {
                state.not_terminal += 1;
            }
            if let Some(kind) = end.failure {
                *state.errors.entry(kind).or_default() += 1;
            }
            if end.request_failed || end.failure.is_some() {
                state.failed += 1;
                Self::window(state, second).failed += 1;
            }
        });
    }

    pub fn progress(&self) -> Progress {
        self.with(|state| Progress {
            arrivals: state.arrivals,
            terminal: state.terminal,
            failed: state.failed,
            place_p99: state
                .endpoints
                .get(&Endpoint::PlaceOrder)
                .and_then(|stats| stats.latency.percentile(99.0)),
            saga_p99: state.saga.percentile(99.0),
        })
    }

    /// Everything counted, for the report; `load_duration` is how long
    /// arrivals went on (the denominator of rates).
    pub fn totals(&self, load_duration: Duration) -> Totals {
        self.with(|state| {
            let secs = load_duration.as_secs_f64().max(f64::EPSILON);
            let endpoints = Endpoint::ALL
                .iter()
                .filter_map(|endpoint| {
                    let stats = state.endpoints.get(endpoint)?;
                    let errors: u64 = stats.errors.values().sum();
                    Some((
                        endpoint.name().to_owned(),
                        EndpointReport {
                            requests: stats.latency.count() + errors,
                            errors,
                            errors_by_kind: by_name(&stats.errors),
                            latency: stats.latency.summary(),
                        },
                    ))
                })
                .collect();
            let outcomes = state
                .outcomes
                .iter()
                .map(|(path, seen)| {
                    let expected = path.expected().to_string();
                    let total: u64 = seen.values().sum();
                    (
                        path.name().to_owned(),
                        OutcomeReport {
                            expected: expected.clone(),
                            total,
                            as_expected: seen.get(&expected).copied().unwrap_or(0),
                            seen: seen.clone(),
                        },
                    )
                })
                .collect();
            Totals {
                arrivals: state.arrivals,
                placed: state.placed,
                terminal: state.terminal,
                not_terminal: state.not_terminal,
                failed_checkouts: state.failed,
                offered_rate: round3(state.arrivals as f64 / secs),
                // Only orders that ended while the load ran: a system that
                // falls behind finishes the rest during the drain, which
                // must not count as keeping up.
                throughput: round3(
                    state
                        .windows
                        .iter()
                        .take(load_duration.as_secs() as usize)
                        .map(|window| window.terminal)
                        .sum::<u64>() as f64
                        / secs,
                ),
                error_rate: if state.arrivals == 0 {
                    0.0
                } else {
                    state.failed as f64 / state.arrivals as f64
                },
                errors: by_name(&state.errors),
                error_examples: state
                    .examples
                    .iter()
                    .map(|(kind, examples)| (kind.name().to_owned(), examples.clone()))
                    .collect(),
                outcomes,
                endpoints,
                saga: state.saga.summary(),
                checkout: state.checkout.summary(),
                start_lag: state.start_lag.summary(),
                timeline: state
                    .windows
                    .iter()
                    .enumerate()
                    .map(|(second, window)| window_report(second, window))
                    .collect(),
            }
        })
    }
}

fn micros(latency: Duration) -> u32 {
    u32::try_from(latency.as_micros()).unwrap_or(u32::MAX)
}

fn by_name(errors: &BTreeMap<ErrorKind, u64>) -> BTreeMap<String, u64> {
    errors
        .iter()
        .map(|(kind, n)| (kind.name().to_owned(), *n))
        .collect()
}

fn window_report(second: usize, window: &Window) -> WindowReport {
    let p = |samples: &[u32], q: f64| {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        nearest_rank(&sorted, q).map(|us| round3(f64::from(us) / 1000.0))
    };
    WindowReport {
        second: second as u64,
        arrivals: window.arrivals,
        terminal: window.terminal,
        failed: window.failed,
        place_p50_ms: p(&window.place_micros, 50.0),
        place_p99_ms: p(&window.place_micros, 99.0),
        saga_p50_ms: p(&window.saga_micros, 50.0),
        saga_p99_ms: p(&window.saga_micros, 99.0),
    }
}

/// One endpoint in the report.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointReport {
    pub requests: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful requests only.
    pub latency: LatencySummary,
}

/// The checkouts sent down one path and how they ended.
#[derive(Clone, Debug, Serialize)]
pub struct OutcomeReport {
    pub expected: String,
    pub total: u64,
    pub as_expected: u64,
    /// Every outcome seen (`CONFIRMED`, `CANCELLED:payment_declined`, ...).
    pub seen: BTreeMap<String, u64>,
}

/// One second of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowReport {
    pub second: u64,
    /// Checkouts due in this second.
    pub arrivals: u64,
    /// Orders seen terminal in this second.
    pub terminal: u64,
    /// Checkouts that failed, counted when they ended.
    pub failed: u64,
    pub place_p50_ms: Option<f64>,
    pub place_p99_ms: Option<f64>,
    pub saga_p50_ms: Option<f64>,
    pub saga_p99_ms: Option<f64>,
}

/// Everything a run counted.
#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    /// Checkouts due (started or not).
    pub arrivals: u64,
    /// Orders the gateway accepted.
    pub placed: u64,
    /// Placed orders seen CONFIRMED or CANCELLED.
    pub terminal: u64,
    /// Placed orders still not terminal at the per-order timeout.
    pub not_terminal: u64,
    /// Checkouts with any error (a failed request, not terminal, an
    /// unexpected outcome, never started).
    pub failed_checkouts: u64,
    /// Arrivals per second of load.
    pub offered_rate: f64,
    /// Terminal orders per second of load.
    pub throughput: f64,
    /// `failed_checkouts / arrivals`.
    pub error_rate: f64,
    /// Errors by kind: each failed request, plus checkouts never started,
    /// not terminal, or ending unexpectedly.
    pub errors: BTreeMap<String, u64>,
    pub error_examples: BTreeMap<String, Vec<String>>,
    pub outcomes: BTreeMap<String, OutcomeReport>,
    pub endpoints: BTreeMap<String, EndpointReport>,
    /// Placed → terminal, from the orders' own timestamps.
    pub saga: LatencySummary,
    /// Due → terminal seen by the client (includes the polling interval).
    pub checkout: LatencySummary,
    /// Started − due, per checkout: near zero when the generator keeps up.
    pub start_lag: LatencySummary,
    pub timeline: Vec<WindowReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(path: Path, outcome: Option<Outcome>, saga_ms: u64) -> CheckoutEnd {
        CheckoutEnd {
            path,
            outcome,
            saga: Some(Duration::from_millis(saga_ms)),
            checkout: Some(Duration::from_millis(saga_ms + 20)),
            request_failed: false,
            failure: None,
        }
    }

    #[test]
    fn totals_add_up_and_rates_use_the_load_duration() {
        let t0 = Instant::now();
        let recorder = Recorder::new(t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for i in 0..10u64 {
            recorder.arrival(at(i * 200), at(i * 200 + 1));
            recorder.request(
                Endpoint::PlaceOrder,
                Duration::from_millis(10 + i),
                at(i * 200 + 20),
                Ok(()),
            );
            recorder.placed();
        }
        recorder.request(
            Endpoint::PollOrder,
            Duration::from_millis(5),
            at(900),
            Err((ErrorKind::Unavailable, "503")),
        );
        for i in 0..8u64 {
            recorder.finished(
                end(Path::Valid, Some(Outcome::confirmed()), 50 + i),
                at(i * 200 + 100),
            );
        }
        recorder.finished(
            end(
                Path::Declined,
                Some(Outcome::cancelled("payment_declined")),
                40,
            ),
            at(1700),
        );
        let mut unexpected = end(Path::Valid, Some(Outcome::cancelled("out_of_stock")), 30);
        unexpected.failure = Some(ErrorKind::UnexpectedOutcome);
        unexpected.request_failed = true;
        recorder.finished(unexpected, at(1900));
        recorder.overloaded(at(1950));

        let totals = recorder.totals(Duration::from_secs(2));
        assert_eq!(totals.arrivals, 11);
        assert_eq!(totals.placed, 10);
        assert_eq!(totals.terminal, 10);
        assert_eq!(totals.failed_checkouts, 2);
        assert_eq!(totals.offered_rate, 5.5);
        assert_eq!(totals.throughput, 5.0);
        assert!((totals.error_rate - 2.0 / 11.0).abs() < 1e-12);
        assert_eq!(totals.errors["unavailable_503"], 1);
        assert_eq!(totals.errors["unexpected_outcome"], 1);
        assert_eq!(totals.errors["generator_overloaded"], 1);
        assert_eq!(totals.outcomes["valid"].total, 9);
        assert_eq!(totals.outcomes["valid"].as_expected, 8);
        assert_eq!(totals.outcomes["valid"].seen["CANCELLED:out_of_stock"], 1);
        assert_eq!(totals.outcomes["declined"].as_expected, 1);
        let place = &totals.endpoints["POST /api/v1/orders"];
        assert_eq!((place.requests, place.errors), (10, 0));
        let max = place.latency.max_ms.expect("max");
        assert!((max - 19.0).abs() < 0.02, "{max}");
        let poll = &totals.endpoints["GET /api/v1/orders/{id}"];
        assert_eq!((poll.requests, poll.errors), (1, 1));
        assert_eq!(poll.latency.count, 0);
        assert_eq!(totals.saga.count, 10);
        assert_eq!(totals.start_lag.max_ms, Some(1.0));

        assert_eq!(totals.timeline.len(), 2);
        let first = &totals.timeline[0];
        assert_eq!((first.arrivals, first.terminal, first.failed), (5, 5, 0));
        assert_eq!(first.saga_p50_ms, Some(52.0));
        assert_eq!(first.saga_p99_ms, Some(54.0));
        assert_eq!(first.place_p99_ms, Some(14.0));
        let second = &totals.timeline[1];
        assert_eq!((second.arrivals, second.terminal, second.failed), (6, 5, 2));
    }

    #[test]
    fn an_order_that_never_ends_is_counted_as_not_terminal() {
        let t0 = Instant::now();
        let recorder = Recorder::new(t0);
        recorder.arrival(t0, t0);
        recorder.placed();
        recorder.finished(
            CheckoutEnd {
                path: Path::Valid,
                outcome: None,
                saga: None,
                checkout: None,
                request_failed: false,
                failure: Some(ErrorKind::NotTerminal),
            },
            t0 + Duration::from_secs(60),
        );
        let totals = recorder.totals(Duration::from_secs(1));
        assert_eq!(
            (totals.placed, totals.terminal, totals.not_terminal),
            (1, 0, 1)
        );
        assert_eq!(totals.failed_checkouts, 1);
        assert_eq!(totals.errors["not_terminal"], 1);
        assert_eq!(totals.timeline.len(), 61);
        assert_eq!(recorder.progress().failed, 1);
    }
}
