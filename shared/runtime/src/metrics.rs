//! The process's Prometheus registry. Libraries record through the `metrics`
//! facade (`metrics::counter!` and friends) without knowing who collects;
//! `install` makes this process collect them, and the ops server renders
//! them at `/metrics` in the Prometheus text format.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for latencies in seconds: 1 ms to 30 s, dense where
/// checkout calls and saga steps land (tens to hundreds of milliseconds).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same
/// handle). Call it first thing in `main`: whatever is recorded before has
/// nowhere to go.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        crate::database::describe();
        crate::grpc::describe();
        handle
    })
}

/// The current metrics in the Prometheus text exposition format.
pub fn render() -> String {
    let handle = install();
    // Without the exporter's own HTTP listener nothing else drains the
    // histograms' pending samples; doing it per scrape bounds their memory.
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_metrics_are_rendered() {
        install();
        metrics::counter!("shipshape_test_events_total", "kind" => "demo").increment(3);
        metrics::histogram!("shipshape_test_duration_seconds").record(0.02);
        let text = render();
        assert!(
            text.contains("shipshape_test_events_total{kind=\"demo\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("shipshape_test_duration_seconds_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
    }
}
