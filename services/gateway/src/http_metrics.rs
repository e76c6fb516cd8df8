//! RED metrics of the public API: every request counted and timed by its
//! route, method and status, the shed and rate-limited ones included.
//!
//! The route is the router's pattern (`/api/v1/orders/{id}`), never the
//! path the client sent, so the number of series stays bounded whatever
//! clients send; a request no route matches is `unmatched`.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;

pub const REQUESTS: &str = "shipshape_http_requests_total";
pub const DURATION: &str = "shipshape_http_request_duration_seconds";
pub const CONNECTIONS_OPEN: &str = "shipshape_http_connections_open";
pub const CONNECTIONS_REFUSED: &str = "shipshape_http_connections_refused_total";
pub const BODIES_REFUSED: &str = "shipshape_http_bodies_refused_total";
pub const IN_FLIGHT: &str = "shipshape_http_in_flight";
pub const SHED: &str = "shipshape_http_shed_total";
pub const RATE_LIMITED: &str = "shipshape_http_rate_limited_total";
pub const CATALOG_STALE: &str = "shipshape_catalog_stale_responses_total";

/// The `limit` label of [`CONNECTIONS_REFUSED`]: the gateway's, or one
/// client address's.
pub const LIMIT_ALL: &str = "all";
pub const LIMIT_ADDRESS: &str = "address";
/// The `scope` label of [`SHED`]: over the gateway's limit, or over one
/// client's.
pub const SCOPE_ALL: &str = "all";
pub const SCOPE_CLIENT: &str = "client";
/// The `code` label of [`BODIES_REFUSED`]: every way a body is refused.
pub const BODY_REFUSALS: [&str; 4] = [
    "body_timeout",
    "payload_too_large",
    "invalid_body",
    "unauthenticated",
];

/// Registers the help text of the API's metrics, and makes every counter
/// with a known set of labels exist at 0, so dashboards and alerts see 0
/// rather than no data before the first refusal.
pub fn describe() {
    for limit in [LIMIT_ALL, LIMIT_ADDRESS] {
        metrics::counter!(CONNECTIONS_REFUSED, "limit" => limit).increment(0);
    }
    for code in BODY_REFUSALS {
        metrics::counter!(BODIES_REFUSED, "code" => code).increment(0);
    }
    for scope in [SCOPE_ALL, SCOPE_CLIENT] {
        metrics::counter!(SHED, "scope" => scope).increment(0);
    }
    metrics::counter!(RATE_LIMITED).increment(0);
    metrics::gauge!(IN_FLIGHT).set(0.0);
    metrics::gauge!(CONNECTIONS_OPEN).set(0.0);
    metrics::describe_gauge!(IN_FLIGHT, "HTTP requests the API is working on");
    metrics::describe_counter!(
        SHED,
        "HTTP requests refused at once because too many were in flight, by scope (all: the gateway's limit, 503; client: one client's, 429)"
    );
    metrics::describe_counter!(
        RATE_LIMITED,
        "HTTP requests refused with 429 because their client was over its rate"
    );
    metrics::describe_counter!(
        CATALOG_STALE,
        "Catalog reads answered from the last good answer while inventory was unavailable, by route"
    );
    metrics::describe_counter!(
        REQUESTS,
        "HTTP requests answered by the API, by route pattern, method and status"
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Time from an HTTP request's arrival to its response headers, by route pattern, method and status"
    );
    metrics::describe_gauge!(CONNECTIONS_OPEN, "TCP connections the API has open");
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed as soon as accepted, by the limit they were over (all, address)"
    );
    metrics::describe_counter!(
        BODIES_REFUSED,
        "Request bodies refused before a handler saw them, by error code (body_timeout, payload_too_large, invalid_body, unauthenticated)"
    );
}

/// Middleware: add it with `Router::layer` after every route, so it sees
/// the route each request matched.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!(REQUESTS, &labels).increment(1);
    metrics::histogram!(DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// The standard methods by name; any other is a client's invention and
/// must not become a label value.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
