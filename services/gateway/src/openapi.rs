//! The OpenAPI 3 document of the public API, generated from the code: the
//! shapes from `api` and `error` (`#[derive(ToSchema)]`), each route's
//! parameters, statuses and headers from its handler's `#[utoipa::path]` in
//! `routes`. Served at `GET /openapi.json` (public), and what the
//! schemathesis run in CI (`cargo xtask schemathesis`) tests the live
//! gateway against.

use std::sync::LazyLock;

use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::routes;

/// The security scheme of the routes that need a caller: a bearer JWT.
pub const BEARER_AUTH: &str = "bearerAuth";

/// The route the document is served on.
pub const PATH: &str = "/openapi.json";

/// Response headers that are always sent with the statuses they are
/// documented for (`Location` with `202`, `Retry-After` with `429` and
/// `503`, `WWW-Authenticate` with `401` and `403`). utoipa cannot mark a
/// header required, so [`document`] does.
const REQUIRED_HEADERS: [&str; 3] = ["Location", "Retry-After", "WWW-Authenticate"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Shipshape API",
        description = "The public HTTP/JSON API of Shipshape. Every error answer has the body \
                       `{\"error\":{\"code\":\"...\",\"message\":\"...\"}}`: the code is stable \
                       and meant for programs, the message is for people. Unknown paths are \
                       `404`, unsupported methods `405` with `Allow`.",
    ),
    paths(
        routes::list_products,
        routes::get_product,
        routes::create_order,
        routes::list_orders,
        routes::get_order,
        routes::get_order_timeline,
        routes::stream_order_timeline,
        routes::restock_product,
        routes::rebuild_order_timelines,
        crate::web::demo_sign_in,
        crate::web::sign_out,
        crate::web::admin_operations,
        crate::web::psp_faults,
        crate::web::set_psp_faults,
        serve,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "catalog", description = "Products, prices and availability; public"),
        (name = "orders", description = "The caller's orders"),
        (name = "admin", description = "Operators only: needs the `admin` scope"),
        (name = "session", description = "The web shop's session cookie, and its demo sign-in (on only where `DEMO_SIGN_IN` is set)"),
        (name = "meta", description = "This document"),
    ),
)]
struct ApiDoc;

/// Adds the `bearerAuth` scheme the routes' `security` refers to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A JWT from the configured issuer; the `admin` scope is needed to restock",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER_AUTH, SecurityScheme::Http(scheme));
    }
}

/// The document, as JSON.
pub fn document() -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| {
        // Only plain data goes in; serializing it cannot fail.
        unreachable!("the OpenAPI document does not serialize: {e}")
    });
    mark_required_headers(&mut document);
    document
}

/// Sets `required: true` on every documented response header that is always
/// sent (see [`REQUIRED_HEADERS`]).
fn mark_required_headers(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for response in responses.values_mut() {
            let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut) else {
                continue;
            };
            for (name, header) in headers.iter_mut() {
                if REQUIRED_HEADERS.contains(&name.as_str())
                    && let Some(header) = header.as_object_mut()
                {
                    header.insert("required".to_owned(), Value::Bool(true));
                }
            }
        }
    }
}

/// The document serialized once, on first use.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// `GET /openapi.json`: this API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3 document of this API", body = Object,
            content_type = "application/json"),
        (status = 401, description = "A bearer token was sent and refused (the route itself is public)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "The gateway is at capacity (`overloaded`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub async fn serve() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        DOCUMENT.as_str(),
    )
        .into_response()
}
