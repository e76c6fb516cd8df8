//! The HTTP contract for everything the gateway answers by itself: bad input,
//! clients over their rate limit and unreachable upstreams. The router is
//! called directly, without a socket; the upstream URLs point at a port where
//! nothing listens.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use shipshape_gateway::admin::AdminToken;
use shipshape_gateway::{AppState, Config, MAX_BODY_BYTES, router};
use shipshape_resilience::ResilienceConfig;
use tower::ServiceExt;

/// Port 1 (tcpmux) is privileged and unused, so a connection is refused at
/// once instead of timing out.
const NOTHING_LISTENS: &str = "http://127.0.0.1:1";

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

/// The defaults `Config::from_env` uses.
fn config() -> Config {
    Config {
        http_addr: ([127, 0, 0, 1], 0).into(),
        ops_addr: ([127, 0, 0, 1], 0).into(),
        order_url: NOTHING_LISTENS.into(),
        inventory_url: NOTHING_LISTENS.into(),
        order: ResilienceConfig::default(),
        inventory: ResilienceConfig::default(),
        rate_limit_enabled: true,
        rate_limit_per_second: non_zero(100),
        rate_limit_burst: non_zero(200),
        load_shed_enabled: true,
        max_in_flight: NonZeroUsize::new(256).expect("non-zero"),
        admin_token: None,
    }
}

fn app_with(config: &Config) -> axum::Router {
    router(AppState::from_config(config).expect("state"), config)
}

fn app() -> axum::Router {
    app_with(&config())
}

async fn send(request: Request<Body>) -> (Response, Value) {
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
    assert_eq!(response.headers()[ALLOW], "POST");
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

const ADMIN_TOKEN: &str = "test-admin-token";

fn with_admin() -> Config {
    Config {
        admin_token: AdminToken::new(ADMIN_TOKEN),
        ..config()
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

#[tokio::test]
async fn without_an_admin_token_the_admin_route_does_not_exist() {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (response, json) = send(restock(Some(&bearer), "SKU-0001", r#"{"add": 5}"#)).await;
    assert_error(&response, &json, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_admin_route_needs_the_bearer_token() {
    let app = app_with(&with_admin());
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some(ADMIN_TOKEN),
        Some("Basic dGVzdA=="),
    ] {
        let request = restock(authorization, "SKU-0001", r#"{"add": 5}"#);
        let (response, json) = send_to(app.clone(), request).await;
        assert_error(&response, &json, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer",
            "{authorization:?}"
        );
    }
}

#[tokio::test]
async fn a_restock_is_checked_before_inventory_is_called() {
    let app = app_with(&with_admin());
    let bearer = format!("Bearer {ADMIN_TOKEN}");
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
        ..config()
    }
}

/// A request the gateway answers by itself (400), so only the rate limit
/// decides whether it passes.
fn cheap_request() -> Request<Body> {
    Request::get("/api/v1/orders/not-a-uuid")
        .body(Body::empty())
        .expect("request")
}

fn from_peer(peer: &str, mut request: Request<Body>) -> Request<Body> {
    let peer: SocketAddr = peer.parse().expect("address");
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

fn with_api_key(key: &str, mut request: Request<Body>) -> Request<Body> {
    let value = key.parse().expect("header value");
    request.headers_mut().insert("x-api-key", value);
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

    // A made-up API key does not free a known address from its limit.
    let (response, _) = send_to(app.clone(), with_api_key("key-1", client_a())).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another address, an API key without an address, no address.
    let others = [
        from_peer("192.0.2.2:40000", cheap_request()),
        with_api_key("key-1", cheap_request()),
        cheap_request(),
    ];
    for request in others {
        let (response, _) = send_to(app.clone(), request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
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
