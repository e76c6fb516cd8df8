//! The HTTP contract for everything the gateway answers by itself: bad input,
//! missing or bad credentials, clients over their rate limit and
//! unreachable upstreams. The router is
//! called directly, without a socket; the upstream URLs point at a port where
//! nothing listens.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use shipshape_gateway::{Config, MAX_BODY_BYTES};
use tower::ServiceExt;

mod support;
use support::{CUSTOMER, NOTHING_LISTENS, app_with, bearer, config, forged_bearer};

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

fn app() -> axum::Router {
    app_with(&config(NOTHING_LISTENS))
}

/// Sends `request` as [`CUSTOMER`], unless it carries credentials of its
/// own.
async fn send(mut request: Request<Body>) -> (Response, Value) {
    if !request.headers().contains_key(AUTHORIZATION) {
        let value = bearer(CUSTOMER, &[]).parse().expect("header value");
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    send_to(app(), request).await
}

async fn send_to(app: axum::Router, request: Request<Body>) -> (Response, Value) {
    let response = app.oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (Response::from_parts(parts, Body::empty()), json)
}

async fn get(uri: &str) -> (Response, Value) {
    send(Request::get(uri).body(Body::empty()).expect("request")).await
}

async fn post_order(content_type: Option<&str>, body: impl Into<Body>) -> (Response, Value) {
    let mut request = Request::post("/api/v1/orders");
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    send(request.body(body.into()).expect("request")).await
}

fn order_body() -> Value {
    json!({
        "items": [{"sku": "SKU-0001", "quantity": 2}],
        "payment": {"card_token": "tok_visa"},
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "1 Main St",
            "line2": "",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE"
        }
    })
}

#[track_caller]
fn assert_error(response: &Response, json: &Value, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status, "{json}");
    assert_eq!(json["error"]["code"], code, "{json}");
    assert!(json["error"]["message"].is_string(), "{json}");
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (response, json) = post_order(Some("application/json"), "{\"items\": [").await;
    assert_error(&response, &json, StatusCode::BAD_REQUEST, "invalid_json");
}

#[tokio::test]
async fn wrong_types_are_400() {
    let mut body = order_body();
    body["items"][0]["quantity"] = json!("two");
    let (response, json) = post_order(Some("application/json"), body.to_string()).await;
    assert_error(&response, &json, StatusCode::BAD_REQUEST, "invalid_json");
}

#[tokio::test]
async fn unknown_fields_are_400() {
    let mut body = order_body();
    body["coupon"] = json!("FREE");
    let (response, json) = post_order(Some("application/json"), body.to_string()).await;
    assert_error(&response, &json, StatusCode::BAD_REQUEST, "invalid_json");

    let mut body = order_body();
    body["items"][0]["quantitiy"] = json!(1);
    let (response, json) = post_order(Some("application/json"), body.to_string()).await;
    assert_error(&response, &json, StatusCode::BAD_REQUEST, "invalid_json");
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    for content_type in [Some("text/plain"), None] {
        let (response, json) = post_order(content_type, order_body().to_string()).await;
        assert_error(
            &response,
            &json,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
}

#[tokio::test]
async fn empty_order_is_400() {
    let mut body = order_body();
    body["items"] = json!([]);
    let (response, json) = post_order(Some("application/json"), body.to_string()).await;
    assert_error(&response, &json, StatusCode::BAD_REQUEST, "empty_order");
}

#[tokio::test]
async fn invalid_idempotency_key_is_400() {
    let request = Request::post("/api/v1/orders")
        .header(CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", "has a space")
        .body(Body::from(order_body().to_string()))
        .expect("request");
    let (response, json) = send(request).await;
    assert_error(
        &response,
        &json,
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let body = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES));
    let (response, json) = post_order(Some("application/json"), body).await;
    assert_error(
        &response,
        &json,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

#[tokio::test]
async fn invalid_order_id_is_400() {
    let (response, json) = get("/api/v1/orders/not-a-uuid").await;
    assert_error(
        &response,
        &json,
        StatusCode::BAD_REQUEST,
        "invalid_order_id",
    );
}

#[tokio::test]
async fn malformed_sku_is_400() {
    let (response, json) = get("/api/v1/products/sku%201").await;
    assert_error(&response, &json, StatusCode::BAD_REQUEST, "invalid_sku");
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let (response, json) = get("/api/v2/teapots").await;
    assert_error(&response, &json, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn unsupported_method_is_405_json_with_allow() {
    let request = Request::delete("/api/v1/orders")
        .body(Body::empty())
        .expect("request");
    let (response, json) = send(request).await;
    assert_error(
        &response,
        &json,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_eq!(response.headers()[ALLOW], "POST,GET,HEAD");
}

#[tokio::test]
async fn unreachable_order_service_is_503_with_retry_after() {
    let (response, json) = get("/api/v1/orders/0193b6d2-7c1e-7a3b-9f00-1234567890ab").await;
    assert_error(
        &response,
        &json,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    assert_eq!(response.headers()[RETRY_AFTER], "1");
}

#[tokio::test]
async fn a_valid_order_reaches_the_upstream() {
    // Validation passed: the only failure left is the missing order service.
    let (response, json) = post_order(Some("application/json"), order_body().to_string()).await;
    assert_error(
        &response,
        &json,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
}

#[tokio::test]
async fn unreachable_inventory_is_503() {
    for uri in ["/api/v1/products", "/api/v1/products/SKU-0001"] {
        let (response, json) = get(uri).await;
        assert_error(
            &response,
            &json,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
        );
        assert_eq!(response.headers()[RETRY_AFTER], "1", "{uri}");
    }
}

fn restock(authorization: Option<&str>, sku: &str, body: &str) -> Request<Body> {
    let mut request = Request::put(format!("/api/v1/admin/products/{sku}/stock"))
        .header(CONTENT_TYPE, "application/json");
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    request.body(Body::from(body.to_owned())).expect("request")
}

fn anonymous(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn orders_need_a_caller_and_the_challenge_says_so() {
    for uri in [
        "/api/v1/orders",
        "/api/v1/orders/0193b6d2-7c1e-7a3b-9f00-1234567890ab",
    ] {
        let (response, json) = send_to(app(), anonymous(uri)).await;
        assert_error(
            &response,
            &json,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        );
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="shipshape""#
        );
    }
    // Refused before the body is read or checked.
    let request = Request::post("/api/v1/orders")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .expect("request");
    let (response, json) = send_to(app(), request).await;
    assert_error(
        &response,
        &json,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
}

#[tokio::test]
async fn a_bad_token_is_401_with_invalid_token_even_on_public_routes() {
    for authorization in [
        forged_bearer(CUSTOMER),
        "Bearer not.a.jwt".to_owned(),
        "Bearer".to_owned(),
    ] {
        for uri in ["/api/v1/orders", "/api/v1/products"] {
            let request = Request::get(uri)
                .header(AUTHORIZATION, &authorization)
                .body(Body::empty())
                .expect("request");
            let (response, json) = send_to(app(), request).await;
            assert_error(
                &response,
                &json,
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            );
            let challenge = response.headers()[WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii");
            assert!(
                challenge.starts_with(r#"Bearer realm="shipshape", error="invalid_token""#),
                "{authorization}: {challenge}"
            );
        }
    }
}

#[tokio::test]
async fn another_scheme_is_no_credentials_at_all() {
    let request = Request::get("/api/v1/orders")
        .header(AUTHORIZATION, "Basic dGVzdA==")
        .body(Body::empty())
        .expect("request");
    let (response, json) = send_to(app(), request).await;
    assert_error(
        &response,
        &json,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        r#"Bearer realm="shipshape""#
    );
}

#[tokio::test(start_paused = true)]
async fn forged_tokens_count_against_the_address_rate_limit() {
    let app = app_with(&strict_limit());
    let forged = || {
        let mut request = from_peer("192.0.2.9:4000", cheap_request());
        let value = forged_bearer(CUSTOMER).parse().expect("header value");
        request.headers_mut().insert(AUTHORIZATION, value);
        request
    };
    for _ in 0..2 {
        let (response, _) = send_to(app.clone(), forged()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let (response, _) = send_to(app, forged()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_catalog_is_public() {
    // Answered by the gateway itself, past authentication: no upstream runs.
    let (response, json) = send_to(app(), anonymous("/api/v1/products/sku%201")).await;
    assert_error(&response, &json, StatusCode::BAD_REQUEST, "invalid_sku");
}

#[tokio::test]
async fn the_admin_route_needs_the_admin_scope() {
    let (response, json) = send_to(app(), restock(None, "SKU-0001", r#"{"add": 5}"#)).await;
    assert_error(
        &response,
        &json,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );

    let customer = bearer(CUSTOMER, &[]);
    let request = restock(Some(&customer), "SKU-0001", r#"{"add": 5}"#);
    let (response, json) = send_to(app(), request).await;
    assert_error(
        &response,
        &json,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    );
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        r#"Bearer realm="shipshape", error="insufficient_scope", scope="admin""#
    );
}

#[tokio::test]
async fn a_restock_is_checked_before_inventory_is_called() {
    let app = app();
    let bearer = bearer("operator", &["admin"]);
    let cases = [
        ("SKU-0001", r#"{"add": 0}"#, "invalid_quantity"),
        ("SKU-0001", r#"{"add": 1000001}"#, "invalid_quantity"),
        ("SKU-0001", r#"{"add": 5, "extra": 1}"#, "invalid_json"),
        ("SKU-0001", r#"{"units": 5}"#, "invalid_json"),
        ("sku%201", r#"{"add": 5}"#, "invalid_sku"),
    ];
    for (sku, body, code) in cases {
        let (response, json) = send_to(app.clone(), restock(Some(&bearer), sku, body)).await;
        assert_error(&response, &json, StatusCode::BAD_REQUEST, code);
    }
    // Valid: the only failure left is the missing inventory service.
    let request = restock(Some(&bearer), "SKU-0001", r#"{"add": 1000000}"#);
    let (response, json) = send_to(app, request).await;
    assert_error(
        &response,
        &json,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
}

/// A config that allows two requests, then one a second.
fn strict_limit() -> Config {
    Config {
        rate_limit_per_second: non_zero(1),
        rate_limit_burst: non_zero(2),
        ..config(NOTHING_LISTENS)
    }
}

/// A request the gateway answers by itself (400), so only the rate limit
/// decides whether it passes.
fn cheap_request() -> Request<Body> {
    Request::get("/api/v1/products/sku%201")
        .body(Body::empty())
        .expect("request")
}

fn from_peer(peer: &str, mut request: Request<Body>) -> Request<Body> {
    let peer: SocketAddr = peer.parse().expect("address");
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

fn as_customer(customer: &str, mut request: Request<Body>) -> Request<Body> {
    let value = bearer(customer, &[]).parse().expect("header value");
    request.headers_mut().insert(AUTHORIZATION, value);
    request
}

#[tokio::test(start_paused = true)]
async fn a_burst_above_the_limit_is_429_with_retry_after() {
    let app = app_with(&strict_limit());
    for _ in 0..2 {
        let (response, _) = send_to(app.clone(), cheap_request()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    let (response, json) = send_to(app.clone(), cheap_request()).await;
    assert_error(
        &response,
        &json,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    assert_eq!(response.headers()[RETRY_AFTER], "1");

    tokio::time::advance(Duration::from_secs(1)).await;
    let (response, _) = send_to(app, cheap_request()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn clients_are_limited_separately() {
    let app = app_with(&strict_limit());
    let client_a = || from_peer("192.0.2.1:40000", cheap_request());
    for _ in 0..2 {
        send_to(app.clone(), client_a()).await;
    }
    let (response, _) = send_to(app.clone(), client_a()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another address, a customer at the same address, no address.
    let others = [
        from_peer("192.0.2.2:40000", cheap_request()),
        as_customer("bob", client_a()),
        cheap_request(),
    ];
    for request in others {
        let (response, _) = send_to(app.clone(), request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    // A customer's allowance follows them to any address.
    let bob_elsewhere = || as_customer("bob", from_peer("198.51.100.7:1234", cheap_request()));
    send_to(app.clone(), bob_elsewhere()).await;
    let (response, _) = send_to(app, bob_elsewhere()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_can_be_turned_off() {
    let app = app_with(&Config {
        rate_limit_enabled: false,
        ..strict_limit()
    });
    for _ in 0..20 {
        let (response, _) = send_to(app.clone(), cheap_request()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_applies_before_the_body_is_read() {
    let app = app_with(&strict_limit());
    for _ in 0..2 {
        send_to(app.clone(), cheap_request()).await;
    }
    let body = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES));
    let request = Request::post("/api/v1/orders")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let (response, json) = send_to(app, request).await;
    assert_error(
        &response,
        &json,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
}
