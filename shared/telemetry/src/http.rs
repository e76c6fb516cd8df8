//! Traces over HTTP: a server span per request (continuing a trusted
//! caller's trace from its `traceparent`, or linking an untrusted one's),
//! answering with the trace's id.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use axum::http::header::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::TraceContext;

/// Set on every response while tracing is on: the trace that served the
/// request, to look up in the trace viewer.
pub const TRACE_ID_HEADER: HeaderName = HeaderName::from_static("x-trace-id");

/// Middleware for a service called by our own services (the PSP
/// simulator): the request's span continues the caller's trace. Add it
/// with `Router::layer` after every route, so the span is named after the
/// route the request matched (`POST /v1/captures`), never after a path the
/// client chose.
pub async fn trace_requests(request: Request, next: Next) -> Response {
    traced(request, next, Caller::Trusted).await
}

/// Middleware for the public edge (the gateway): every request starts a
/// trace of its own, with a link to the trace the client named, if any. An
/// internet client must not choose our trace ids or sampling decisions
/// (a `traceparent` ending `-01` would force its requests into the
/// sample), nor have its `tracestate` copied into every row and message of
/// the saga.
pub async fn trace_public_requests(request: Request, next: Next) -> Response {
    traced(request, next, Caller::Untrusted).await
}

#[derive(Clone, Copy, PartialEq)]
enum Caller {
    Trusted,
    Untrusted,
}

async fn traced(request: Request, next: Next, caller: Caller) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let span = tracing::info_span!(
        "http.request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route.as_deref().unwrap_or(""),
        http.response.status_code = Empty,
    );
    let incoming = TraceContext::from_headers(request.headers());
    match caller {
        Caller::Trusted => incoming.adopt(&span),
        Caller::Untrusted => incoming.without_state().link(&span),
    }
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID
        && let Ok(value) = HeaderValue::from_str(&trace_id.to_string())
    {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
    response
}
