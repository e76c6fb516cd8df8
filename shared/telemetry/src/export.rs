//! Trace export over OTLP, configured by the standard `OTEL_*` variables.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Where spans go: set it to turn tracing on.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The exporter's protocol; only `grpc` is built in.
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
/// The exporter's timeout per batch, when `OTEL_EXPORTER_OTLP_TIMEOUT`
/// does not say.
const TIMEOUT_VAR: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The standard override of the service's name.
const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
/// How long [`Telemetry::shutdown`] waits for the last spans to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The process's trace pipeline: nothing when export is off.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or its traces-only
    /// form) names a collector. The endpoint, headers and timeout (5 s by
    /// default here) are read by the OTLP exporter, the sampler (`OTEL_TRACES_SAMPLER`,
    /// `OTEL_TRACES_SAMPLER_ARG`) and batching (`OTEL_BSP_*`) by the SDK,
    /// the resource attributes (`OTEL_RESOURCE_ATTRIBUTES`) by its
    /// resource detectors.
    pub(crate) fn from_env(service: &'static str) -> anyhow::Result<Self> {
        let configured = |var: &str| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
        if !configured(ENDPOINT_VAR) && !configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return Ok(Self { provider: None });
        }
        // The traces-only variable wins over the general one, as the
        // specification says; only the one that applies is checked.
        let protocol = PROTOCOL_VARS
            .iter()
            .find_map(|var| Some((*var, std::env::var(var).ok().filter(|p| !p.is_empty())?)));
        if let Some((var, protocol)) = protocol
            && protocol != "grpc"
        {
            bail!("{var}={protocol}: only `grpc` is supported (OTLP over gRPC, port 4317)");
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if !configured(TIMEOUT_VAR) && !configured("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            exporter = exporter.with_timeout(EXPORT_TIMEOUT);
        }
        let exporter = exporter
            .build()
            .context("building the OTLP span exporter")?;
        let mut resource = Resource::builder();
        if !configured(SERVICE_NAME_VAR) {
            resource = resource.with_service_name(service);
        }
        let provider = SdkTracerProvider::builder()
            // On the process's own runtime: the exporter is a tonic client,
            // which needs one, and a busy collector then costs no thread.
            .with_span_processor(BatchSpanProcessor::builder(exporter, Tokio).build())
            .with_resource(resource.build())
            .build();
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// The `tracing` layer turning spans into OpenTelemetry spans, when
    /// exporting. It also installs the W3C propagator, which is what makes
    /// [`crate::propagation`] carry anything.
    pub(crate) fn layer<S>(&self) -> Option<impl Layer<S> + use<S>>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let provider = self.provider.as_ref()?;
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let tracer = provider.tracer("shipshape");
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_threads(false),
        )
    }

    /// Runs a process's `work`, then flushes the spans it left buffered,
    /// whether it ended well or not: what every `main` does.
    pub async fn around<T>(self, work: impl Future<Output = T>) -> T {
        let outcome = work.await;
        self.shutdown().await;
        outcome
    }

    /// Exports the spans still buffered and stops the exporter; waits at
    /// most a few seconds for an unreachable collector.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // Shutting the provider down blocks until its batch task, which runs
        // on this runtime, has exported: block a thread of its own. The
        // async-runtime processor ignores the timeout it is given, so the
        // wait is bounded here: an unreachable collector must not hold the
        // process past its grace period.
        let flushed = tokio::time::timeout(
            FLUSH_TIMEOUT,
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT)),
        )
        .await;
        match flushed {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the last spans were not exported"),
            Ok(Err(error)) => tracing::warn!(%error, "trace export shutdown panicked"),
            Err(_) => tracing::warn!(
                timeout_secs = FLUSH_TIMEOUT.as_secs(),
                "the last spans were not exported in time; giving up on them"
            ),
        }
    }
}
