//! The trace context crosses a boundary intact: a span continued from
//! another's context is its child in the same trace, over headers, Kafka
//! pairs and a database column alike; and the JSON log lines written in a
//! traced span carry its ids. A real OpenTelemetry pipeline (the SDK with
//! a capturing exporter), not a stand-in: the test checks what would be
//! exported.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use shipshape_telemetry::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[derive(Clone, Debug, Default)]
struct Captured(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Captured {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn ids(span: &tracing::Span) -> (TraceId, SpanId) {
    let context = span.context();
    let otel = context.span();
    let span_context = otel.span_context();
    (span_context.trace_id(), span_context.span_id())
}

/// Runs `f` with an OpenTelemetry-backed subscriber and the W3C
/// propagator; returns the spans exported.
fn traced(f: impl FnOnce()) -> Vec<SpanData> {
    let exported = Captured::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exported.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, f);
    provider.shutdown().unwrap();
    exported.0.lock().unwrap().clone()
}

#[test]
fn a_span_continued_from_headers_pairs_or_json_is_a_child_in_the_same_trace() {
    let mut parents = Vec::new();
    let mut children = Vec::new();
    let spans = traced(|| {
        let sender = tracing::info_span!("sender");
        parents.push(ids(&sender));
        let context = sender.in_scope(TraceContext::current);
        assert!(!context.is_empty());

        let mut headers = HeaderMap::new();
        context.write_headers(&mut headers);
        let via_headers = TraceContext::from_headers(&headers);
        let via_kafka = TraceContext::from_pairs(
            context
                .pairs()
                .map(|(name, value)| (name, value.as_bytes())),
        );
        let via_row = TraceContext::from_json(context.to_json().as_ref());

        for (name, carried) in [
            ("headers", via_headers),
            ("kafka", via_kafka),
            ("row", via_row),
        ] {
            let receiver = tracing::info_span!("receiver", via = name);
            carried.adopt(&receiver);
            children.push(ids(&receiver));
        }
    });
    let (trace_id, parent_id) = parents[0];
    for (child_trace, _) in &children {
        assert_eq!(*child_trace, trace_id, "the child is in the sender's trace");
    }
    let receivers: Vec<_> = spans.iter().filter(|s| s.name == "receiver").collect();
    assert_eq!(receivers.len(), 3);
    for receiver in receivers {
        assert_eq!(receiver.parent_span_id, parent_id);
        assert!(receiver.parent_span_is_remote);
    }
}

#[test]
fn an_empty_context_leaves_a_root_and_a_link_is_not_a_parent() {
    let mut sender_ids = Vec::new();
    let spans = traced(|| {
        let orphan = tracing::info_span!("from_nothing");
        TraceContext::default().adopt(&orphan);
        drop(orphan);

        let sender = tracing::info_span!("sender");
        sender_ids.push(ids(&sender));
        let context = TraceContext::of(&sender);
        let linked = tracing::info_span!("linked");
        context.link(&linked);
        drop(linked);
    });
    let root = spans.iter().find(|s| s.name == "from_nothing").unwrap();
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    let linked = spans.iter().find(|s| s.name == "linked").unwrap();
    assert_eq!(linked.parent_span_id, SpanId::INVALID);
    let (trace_id, span_id) = sender_ids[0];
    assert_ne!(linked.span_context.trace_id(), trace_id);
    assert_eq!(linked.links.links[0].span_context.span_id(), span_id);
}

/// Serves one request through `middleware` and returns the exported
/// spans of the server side.
fn serve_once(
    middleware: fn(axum::extract::Request, axum::middleware::Next) -> BoxedResponse,
    traceparent: &str,
) -> Vec<SpanData> {
    use tower::ServiceExt as _;
    traced(|| {
        let router = axum::Router::new()
            .route("/ping", axum::routing::get(|| async { "pong" }))
            .layer(axum::middleware::from_fn(middleware));
        let request = axum::http::Request::get("/ping")
            .header("traceparent", traceparent)
            .header("tracestate", "attacker=1")
            .body(axum::body::Body::empty())
            .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(router.oneshot(request))
            .unwrap();
    })
}

type BoxedResponse =
    std::pin::Pin<Box<dyn std::future::Future<Output = axum::response::Response> + Send>>;

const CLIENT_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn the_public_edge_starts_its_own_trace_and_links_the_clients() {
    let spans = serve_once(
        |request, next| {
            Box::pin(shipshape_telemetry::http::trace_public_requests(
                request, next,
            ))
        },
        CLIENT_PARENT,
    );
    let server = spans.iter().find(|s| s.name == "GET /ping").unwrap();
    assert_eq!(server.parent_span_id, SpanId::INVALID, "a root of our own");
    assert_ne!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let link = &server.links.links[0].span_context;
    assert_eq!(
        link.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(link.span_id().to_string(), "00f067aa0ba902b7");
    assert!(
        link.trace_state().header().is_empty(),
        "the client's tracestate is dropped"
    );
}

#[test]
fn an_internal_server_continues_its_callers_trace() {
    let spans = serve_once(
        |request, next| Box::pin(shipshape_telemetry::http::trace_requests(request, next)),
        CLIENT_PARENT,
    );
    let server = spans.iter().find(|s| s.name == "GET /ping").unwrap();
    assert_eq!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
}
