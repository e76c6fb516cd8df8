//! Test doubles: a scripted downstream that counts its calls, and a metrics
//! recorder private to the test's thread.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use crate::ResilienceError;

/// What the fake does with one call: wait `after`, then answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step {
    after: Duration,
    result: Result<(), Code>,
}

/// The error of a call its connection cancelled before sending it.
#[derive(Debug)]
pub(crate) struct NeverSent;

impl crate::Classify for NeverSent {
    fn class(&self) -> crate::FailureClass {
        crate::FailureClass::Unsent
    }
}

pub(crate) fn ok() -> Step {
    Step {
        after: Duration::ZERO,
        result: Ok(()),
    }
}

pub(crate) fn fail(code: Code) -> Step {
    Step {
        after: Duration::ZERO,
        result: Err(code),
    }
}

/// `step`, answered only after `after`.
pub(crate) fn slow(after: Duration, step: Step) -> Step {
    Step { after, ..step }
}

/// A downstream answering its n-th call with the n-th step of its script,
/// and every call after the script with the script's last step.
#[derive(Clone)]
pub(crate) struct Fake {
    state: Arc<Mutex<FakeState>>,
}

struct FakeState {
    script: VecDeque<Step>,
    last: Step,
    calls: Vec<Instant>,
}

impl Fake {
    pub(crate) fn new(script: impl IntoIterator<Item = Step>) -> Self {
        Self {
            state: Arc::new(Mutex::new(FakeState {
                script: script.into_iter().collect(),
                last: ok(),
                calls: Vec::new(),
            })),
        }
    }

    /// Calls made so far.
    pub(crate) fn calls(&self) -> usize {
        self.state.lock().unwrap().calls.len()
    }

    /// When each call was made.
    pub(crate) fn call_times(&self) -> Vec<Instant> {
        self.state.lock().unwrap().calls.clone()
    }

    fn next(&self) -> Step {
        let mut state = self.state.lock().unwrap();
        state.calls.push(Instant::now());
        if let Some(step) = state.script.pop_front() {
            state.last = step;
        }
        state.last
    }

    /// The fake as a gRPC client method would look.
    pub(crate) fn service(
        &self,
    ) -> impl Service<
        (),
        Response = (),
        Error = Status,
        Future = impl Future<Output = Result<(), Status>> + Send + 'static,
    > + Clone
    + Send
    + 'static {
        let fake = self.clone();
        tower::service_fn(move |()| {
            let step = fake.next();
            async move {
                tokio::time::sleep(step.after).await;
                step.result.map_err(|code| Status::new(code, "scripted"))
            }
        })
    }

    /// The fake as the layers above the bulkhead see it.
    pub(crate) fn wrapped(
        &self,
    ) -> impl Service<
        (),
        Response = (),
        Error = ResilienceError<Status>,
        Future = impl Future<Output = Result<(), ResilienceError<Status>>> + Send + 'static,
    > + Clone
    + Send
    + 'static {
        self.service().map_err(ResilienceError::Inner)
    }
}

/// Metrics recorded on this thread for as long as it lives. Tests run on a
/// current-thread runtime, so spawned tasks record here too.
pub(crate) struct Metrics {
    handle: PrometheusHandle,
    _guard: metrics::LocalRecorderGuard<'static>,
}

impl Metrics {
    pub(crate) fn local() -> Self {
        // Leaked so the guard can borrow it for the rest of the test.
        let recorder = Box::leak(Box::new(PrometheusBuilder::new().build_recorder()));
        Self {
            handle: recorder.handle(),
            _guard: metrics::set_default_local_recorder(recorder),
        }
    }

    pub(crate) fn render(&self) -> String {
        self.handle.render()
    }

    /// The value of one series, such as
    /// `shipshape_retries_total{downstream="inventory"}`.
    pub(crate) fn value(&self, series: &str) -> Option<f64> {
        self.render().lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.parse().ok()
        })
    }
}
