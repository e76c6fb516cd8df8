//! Traces over HTTP, built from tower-http's standard layers: every request
//! gets an id (`x-request-id`, answered back and on every log line of the
//! request) and a server span (continuing a trusted caller's trace from its
//! `traceparent`, or linking an untrusted one's), and the answer names the
//! trace that served it (`x-trace-id`).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::header::HeaderValue;
use axum::http::{HeaderName, Request, Response};
use opentelemetry::trace::TraceContextExt as _;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::{SetRequestHeaderLayer, SetResponseHeaderLayer};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::TraceContext;

/// Set on every response while tracing is on: the trace that served the
/// request, to look up in the trace viewer.
pub const TRACE_ID_HEADER: HeaderName = HeaderName::from_static("x-trace-id");

/// On every request and its response: the request's id, also recorded on
/// its span (so on every log line written while serving it).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Who calls a server, which decides how much of what the caller says about
/// its trace and its request is believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Our own services (the PSP simulator's callers, or the gateway behind
    /// an edge that strips clients' trace headers): the request's span
    /// continues the caller's trace, and the caller's request id is kept.
    Trusted,
    /// The internet (the gateway): every request starts a trace of its own,
    /// with a link to the trace the client named, if any, and gets an id of
    /// our own. An internet client must not choose our trace ids or sampling
    /// decisions (a `traceparent` ending `-01` would force its requests
    /// into the sample), nor have its `tracestate` copied into every row and
    /// message of the saga, nor put what it likes into our logs as an id.
    Untrusted,
}

/// Wraps every route of `router` in the request id, the server span and the
/// trace id answer. Call it after every route is added, so each span is
/// named after the route the request matched (`POST /v1/captures`), never
/// after a path the client chose; layers added later run outside it.
pub fn traced<S>(router: Router<S>, caller: Caller) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // Each layer wraps the ones before it: a request meets the request id
    // first, then its answer is given the id, then the span, then (inside
    // the span) the trace id header.
    let router = router
        .layer(SetResponseHeaderLayer::overriding(
            TRACE_ID_HEADER,
            trace_id_of_current_span,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(ServerSpan(caller))
                .on_request(())
                .on_response(RecordStatus)
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER));
    match caller {
        Caller::Trusted => router.layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid)),
        Caller::Untrusted => router.layer(SetRequestHeaderLayer::overriding(
            REQUEST_ID_HEADER,
            |_: &Request<Body>| HeaderValue::try_from(uuid::Uuid::new_v4().to_string()).ok(),
        )),
    }
}

/// Opens the request's server span, named after its route.
#[derive(Clone, Copy)]
struct ServerSpan(Caller);

impl<B> MakeSpan<B> for ServerSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|path| path.as_str().to_owned());
        let method = request.method().as_str();
        let name = match &route {
            Some(route) => format!("{method} {route}"),
            None => method.to_owned(),
        };
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|id| id.to_str().ok())
            .unwrap_or("");
        let span = tracing::info_span!(
            "http.request",
            otel.name = %name,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %method,
            http.route = route.as_deref().unwrap_or(""),
            http.response.status_code = Empty,
            request_id = %request_id,
        );
        let incoming = TraceContext::from_headers(request.headers());
        match self.0 {
            Caller::Trusted => incoming.adopt(&span),
            Caller::Untrusted => incoming.without_state().link(&span),
        }
        span
    }
}

/// Records the answer's status on the span; a 5xx marks it failed.
#[derive(Clone, Copy)]
struct RecordStatus;

impl<B> OnResponse<B> for RecordStatus {
    fn on_response(self, response: &Response<B>, _latency: Duration, span: &Span) {
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The id of the trace the current span belongs to, as a header value;
/// nothing while tracing is off.
fn trace_id_of_current_span(_: &Response<Body>) -> Option<HeaderValue> {
    let trace_id = Span::current().context().span().span_context().trace_id();
    if trace_id == opentelemetry::trace::TraceId::INVALID {
        return None;
    }
    HeaderValue::from_str(&trace_id.to_string()).ok()
}
