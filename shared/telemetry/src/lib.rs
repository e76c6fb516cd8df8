//! Logs and traces for every Shipshape process.
//!
//! [`init`] installs the `tracing` subscriber: logs on stdout (one JSON
//! object per line with `LOG_FORMAT=json`, carrying the `trace_id`,
//! `span_id` and `order_id` of the work they belong to), and, when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer
//! exporting spans over OTLP/gRPC. Without it no OpenTelemetry layer is
//! installed at all: spans are plain `tracing` spans, nothing is exported
//! or propagated, and nothing slows down.
//!
//! [`propagation`] carries the W3C trace context across process boundaries:
//! HTTP headers, gRPC metadata, Kafka headers and database rows (the outbox,
//! and work a service resumes later).
//!
//! No secret reaches a log line, in either format: fields named like one
//! (`password`, `*_secret`, `*token*`, ...) are written `***`, and URL
//! credentials and secret `NAME=value` pairs are hidden in every text value
//! and message ([`redact`], which other code writing logs uses too). The
//! text format escapes control characters, so a value cannot forge a line.
#![forbid(unsafe_code)]

mod export;
pub mod grpc;
pub mod http;
mod logs;
pub mod propagation;
pub mod redact;

pub use export::Telemetry;
pub use propagation::TraceContext;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The default log filter: our own `info`, and only warnings from the
/// chatty libraries underneath.
const DEFAULT_FILTER: &str = "info,sqlx=warn,rdkafka=warn,h2=warn,tower=warn,opentelemetry=warn";

/// Installs logging and, when configured, trace export for `service` (the
/// default `service.name`; `OTEL_SERVICE_NAME` overrides it). Keep the
/// returned [`Telemetry`] and call [`Telemetry::shutdown`] before exiting,
/// so spans still buffered are exported.
///
/// Fails when trace export is configured but cannot be set up (a malformed
/// endpoint, an unsupported protocol): a process asked to export traces
/// must not run silently without them. Calling it twice keeps the first
/// subscriber.
pub fn init(service: &'static str) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let telemetry = Telemetry::from_env(service)?;
    let subscriber = logs::SubscriberCell::default();
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .event_format(logs::JsonLines::new(service, subscriber.clone()))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .fmt_fields(logs::TextFields)
            .boxed()
    };
    // One filter for logs and spans alike: a span below the log level is
    // not worth exporting either, and skipping it early is what keeps the
    // libraries' debug spans from costing anything.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(telemetry.layer())
        .with(logs::OrderIdLayer::new(subscriber))
        .with(fmt)
        .try_init();
    if installed.is_ok() {
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            tracing = telemetry.exporting(),
            "starting"
        );
    }
    Ok(telemetry)
}
