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
use shipshape_telemetry::http::{self, Caller};
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
/// Serves one `GET /ping` with `headers` through [`http::traced`]; returns
/// the spans exported and the answer's headers.
fn serve_once(caller: Caller, headers: &[(&str, &str)]) -> (Vec<SpanData>, HeaderMap) {
    use tower::ServiceExt as _;
    let mut answer = HeaderMap::new();
    let spans = traced(|| {
        let routes = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
        let router = http::traced(routes, caller);
        let mut request = axum::http::Request::get("/ping");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(router.oneshot(request.body(axum::body::Body::empty()).unwrap()))
            .unwrap();
        answer = response.headers().clone();
    });
    (spans, answer)
}

/// A client's trace headers, with a tracestate it should not get copied.
const CLIENT_TRACE: [(&str, &str); 2] =
    [("traceparent", CLIENT_PARENT), ("tracestate", "attacker=1")];

const CLIENT_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn the_public_edge_starts_its_own_trace_and_links_the_clients() {
    let (spans, answer) = serve_once(Caller::Untrusted, &CLIENT_TRACE);
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
    assert_eq!(
        answer[http::TRACE_ID_HEADER],
        server.span_context.trace_id().to_string(),
        "the answer names our trace"
    );
}

#[test]
fn an_internal_server_continues_its_callers_trace() {
    let (spans, answer) = serve_once(Caller::Trusted, &CLIENT_TRACE);
    let server = spans.iter().find(|s| s.name == "GET /ping").unwrap();
    assert_eq!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        answer[http::TRACE_ID_HEADER],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

fn request_id_of(span: &SpanData) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == "request_id")
        .map(|kv| kv.value.to_string())
        .unwrap_or_default()
}

#[test]
fn the_public_edge_gives_each_request_an_id_of_its_own_whatever_the_client_sent() {
    for sent in [&[][..], &[("x-request-id", "attacker chosen")][..]] {
        let (spans, answer) = serve_once(Caller::Untrusted, sent);
        let id = answer[http::REQUEST_ID_HEADER].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{sent:?}: {id}");
        let server = spans.iter().find(|s| s.name == "GET /ping").unwrap();
        assert_eq!(
            request_id_of(server),
            id,
            "the span carries the id answered"
        );
    }
    let (_, first) = serve_once(Caller::Untrusted, &[]);
    let (_, second) = serve_once(Caller::Untrusted, &[]);
    assert_ne!(
        first[http::REQUEST_ID_HEADER],
        second[http::REQUEST_ID_HEADER]
    );
}

#[test]
fn an_internal_server_keeps_its_callers_request_id_or_makes_one() {
    let (spans, answer) = serve_once(Caller::Trusted, &[("x-request-id", "req-from-payment")]);
    assert_eq!(answer[http::REQUEST_ID_HEADER], "req-from-payment");
    let server = spans.iter().find(|s| s.name == "GET /ping").unwrap();
    assert_eq!(request_id_of(server), "req-from-payment");
    let (_, answer) = serve_once(Caller::Trusted, &[]);
    let made = answer[http::REQUEST_ID_HEADER].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
}
