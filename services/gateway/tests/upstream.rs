//! The gateway against in-process fakes of the order and inventory services:
//! what a successful call looks like over HTTP, how upstream errors and
//! timeouts surface, and that `run` serves, reports readiness and stops.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use shipshape_gateway::{AppState, Config, router, run};
use shipshape_proto::common;
use shipshape_proto::inventory::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use shipshape_proto::inventory::{
    GetProductRequest, ListProductsRequest, ListProductsResponse, PriceSkusRequest,
    PriceSkusResponse, Product,
};
use shipshape_proto::order::order_service_server::{OrderService, OrderServiceServer};
use shipshape_proto::order::{
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, Order, OrderLine, OrderStatus,
};
use shipshape_runtime::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::MetadataValue;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tower::ServiceExt;

const ORDER_ID: &str = "0193b6d2-7c1e-7a3b-9f00-1234567890ab";
/// A sku the fake inventory answers only after the gateway has given up.
const SLOW_SKU: &str = "SKU-SLOW";
/// The gateway's per-call timeout in these tests; the slow sku takes longer.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);

fn eur(amount_minor: i64) -> Option<common::Money> {
    Some(common::Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

fn status_with_code(code: tonic::Code, message: &str, error_code: &'static str) -> Status {
    let mut status = Status::new(code, message);
    status
        .metadata_mut()
        .insert("x-error-code", MetadataValue::from_static(error_code));
    status
}

/// Answers from fixed data and records the last order request it saw.
#[derive(Default)]
struct FakeOrders {
    last_request: Arc<Mutex<Option<CreateOrderRequest>>>,
}

fn stored_order(request: &CreateOrderRequest) -> Order {
    Order {
        order_id: ORDER_ID.into(),
        customer_id: request.customer_id.clone(),
        status: OrderStatus::Pending as i32,
        cancellation_reason: String::new(),
        lines: request
            .lines
            .iter()
            .map(|line| OrderLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price: eur(1999),
            })
            .collect(),
        total: eur(1999 * request.lines.iter().map(|l| l.quantity).sum::<i64>()),
        shipping_address: request.shipping_address.clone(),
        created_at_micros: 1_738_315_800_000_042,
        updated_at_micros: 1_738_315_800_000_042,
        completed_at_micros: 0,
    }
}

#[tonic::async_trait]
impl OrderService for FakeOrders {
    async fn create_order(
        &self,
        request: GrpcRequest<CreateOrderRequest>,
    ) -> Result<GrpcResponse<CreateOrderResponse>, Status> {
        let request = request.into_inner();
        if let Ok(mut last) = self.last_request.lock() {
            *last = Some(request.clone());
        }
        if request.lines.iter().any(|l| l.sku == "SKU-9999") {
            return Err(status_with_code(
                tonic::Code::InvalidArgument,
                "SKU-9999 is not in the catalog",
                "unknown_sku",
            ));
        }
        if request.idempotency_key == "reused" {
            return Err(Status::failed_precondition(
                "idempotency key was used for a different request",
            ));
        }
        Ok(GrpcResponse::new(CreateOrderResponse {
            order: Some(stored_order(&request)),
            replayed: request.idempotency_key == "seen-before",
        }))
    }

    async fn get_order(
        &self,
        request: GrpcRequest<GetOrderRequest>,
    ) -> Result<GrpcResponse<Order>, Status> {
        if request.get_ref().order_id != ORDER_ID {
            return Err(Status::not_found("no such order"));
        }
        let mut order = stored_order(&CreateOrderRequest {
            customer_id: "guest".into(),
            lines: vec![shipshape_proto::order::LineRequest {
                sku: "SKU-0001".into(),
                quantity: 2,
            }],
            shipping_address: Some(common::Address {
                name: "Ada Lovelace".into(),
                line1: "1 Main St".into(),
                line2: String::new(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            }),
            ..Default::default()
        });
        order.status = OrderStatus::Cancelled as i32;
        order.cancellation_reason = "out_of_stock".into();
        order.completed_at_micros = 1_738_315_802_000_000;
        Ok(GrpcResponse::new(order))
    }
}

struct FakeInventory;

fn teapot() -> Product {
    Product {
        sku: "SKU-0001".into(),
        name: "Teapot".into(),
        description: "Short and stout".into(),
        price: eur(1999),
        available: 7,
    }
}

#[tonic::async_trait]
impl InventoryService for FakeInventory {
    async fn list_products(
        &self,
        _: GrpcRequest<ListProductsRequest>,
    ) -> Result<GrpcResponse<ListProductsResponse>, Status> {
        Ok(GrpcResponse::new(ListProductsResponse {
            products: vec![teapot()],
        }))
    }

    async fn get_product(
        &self,
        request: GrpcRequest<GetProductRequest>,
    ) -> Result<GrpcResponse<Product>, Status> {
        match request.get_ref().sku.as_str() {
            "SKU-0001" => Ok(GrpcResponse::new(teapot())),
            SLOW_SKU => {
                tokio::time::sleep(CALL_TIMEOUT * 10).await;
                Ok(GrpcResponse::new(teapot()))
            }
            _ => Err(Status::not_found("no such product")),
        }
    }

    async fn price_skus(
        &self,
        _: GrpcRequest<PriceSkusRequest>,
    ) -> Result<GrpcResponse<PriceSkusResponse>, Status> {
        Err(Status::unimplemented("the gateway never prices"))
    }
}

/// Both fakes on one port; the returned URL serves either service.
async fn spawn_upstreams() -> (String, Arc<Mutex<Option<CreateOrderRequest>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let orders = FakeOrders::default();
    let last_request = orders.last_request.clone();
    let server = Server::builder()
        .add_service(OrderServiceServer::new(orders))
        .add_service(InventoryServiceServer::new(FakeInventory))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    (format!("http://{addr}"), last_request)
}

fn config(upstream_url: &str) -> Config {
    Config {
        http_addr: ([127, 0, 0, 1], 0).into(),
        ops_addr: ([127, 0, 0, 1], 0).into(),
        order_url: upstream_url.into(),
        inventory_url: upstream_url.into(),
        upstream_timeout: CALL_TIMEOUT,
    }
}

async fn send(app: axum::Router, request: Request<Body>) -> (Response, Value) {
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

async fn app() -> (axum::Router, Arc<Mutex<Option<CreateOrderRequest>>>) {
    let (url, last_request) = spawn_upstreams().await;
    let state = AppState::from_config(&config(&url)).expect("state");
    (router(state), last_request)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn post_order(idempotency_key: Option<&str>, body: &Value) -> Request<Body> {
    let mut request = Request::post("/api/v1/orders").header(CONTENT_TYPE, "application/json");
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    request.body(Body::from(body.to_string())).expect("request")
}

fn order_body() -> Value {
    json!({
        "items": [{"sku": "SKU-0001", "quantity": 2}, {"sku": "SKU-0002", "quantity": 1}],
        "payment": {"card_token": "tok_visa"},
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "1 Main St",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE"
        }
    })
}

#[tokio::test]
async fn placing_an_order_is_202_with_location() {
    let (app, last_request) = app().await;
    let (response, json) = send(app, post_order(Some("checkout-1"), &order_body())).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{json}");
    assert_eq!(json, json!({"order_id": ORDER_ID, "status": "PENDING"}));
    assert_eq!(
        response.headers()[LOCATION],
        format!("/api/v1/orders/{ORDER_ID}").as_str()
    );
    assert!(response.headers().get("idempotent-replayed").is_none());

    let sent = last_request
        .lock()
        .expect("lock")
        .take()
        .expect("the order service was called");
    assert_eq!(sent.customer_id, "guest");
    assert_eq!(sent.idempotency_key, "checkout-1");
    assert_eq!(sent.card_token, "tok_visa");
    assert_eq!(sent.lines.len(), 2);
    assert_eq!(
        (sent.lines[0].sku.as_str(), sent.lines[0].quantity),
        ("SKU-0001", 2)
    );
    let address = sent.shipping_address.expect("address");
    assert_eq!(
        (address.line2.as_str(), address.country.as_str()),
        ("", "DE")
    );
}

#[tokio::test]
async fn without_a_key_the_order_service_gets_an_empty_one() {
    let (app, last_request) = app().await;
    let (response, _) = send(app, post_order(None, &order_body())).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let sent = last_request.lock().expect("lock").take().expect("called");
    assert_eq!(sent.idempotency_key, "");
}

#[tokio::test]
async fn a_replay_is_still_202_and_says_so() {
    let (app, _) = app().await;
    let (response, json) = send(app, post_order(Some("seen-before"), &order_body())).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(json, json!({"order_id": ORDER_ID, "status": "PENDING"}));
    assert_eq!(response.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_reused_key_is_422() {
    let (app, _) = app().await;
    let (response, json) = send(app, post_order(Some("reused"), &order_body())).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json["error"]["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn the_upstream_error_code_reaches_the_client() {
    let (app, _) = app().await;
    let mut body = order_body();
    body["items"][1]["sku"] = json!("SKU-9999");
    let (response, json) = send(app, post_order(None, &body)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json["error"],
        json!({"code": "unknown_sku", "message": "SKU-9999 is not in the catalog"})
    );
}

#[tokio::test]
async fn an_order_reads_back_as_json() {
    let (app, _) = app().await;
    let (response, json) = send(app, get(&format!("/api/v1/orders/{ORDER_ID}"))).await;
    assert_eq!(response.status(), StatusCode::OK, "{json}");
    assert_eq!(json["order_id"], ORDER_ID);
    assert_eq!(json["status"], "CANCELLED");
    assert_eq!(json["cancellation_reason"], "out_of_stock");
    assert_eq!(
        json["items"][0]["line_total"],
        json!({"amount_minor": 3998, "currency": "EUR"})
    );
    assert_eq!(
        json["total"],
        json!({"amount_minor": 3998, "currency": "EUR"})
    );
    assert_eq!(json["created_at"], "2025-01-31T09:30:00.000042Z");
    assert_eq!(json["completed_at"], "2025-01-31T09:30:02.000000Z");
}

#[tokio::test]
async fn an_unknown_order_is_404() {
    let (app, _) = app().await;
    let (response, json) = send(
        app,
        get("/api/v1/orders/00000000-0000-4000-8000-000000000000"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json["error"]["code"], "not_found");
}

#[tokio::test]
async fn the_catalog_and_one_product() {
    let (app, _) = app().await;
    let (response, json) = send(app.clone(), get("/api/v1/products")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json,
        json!({"products": [{
            "sku": "SKU-0001",
            "name": "Teapot",
            "description": "Short and stout",
            "price": {"amount_minor": 1999, "currency": "EUR"},
            "available": 7
        }]})
    );

    let (response, json) = send(app.clone(), get("/api/v1/products/SKU-0001")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json["sku"], "SKU-0001");

    let (response, json) = send(app, get("/api/v1/products/SKU-0404")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_slow_upstream_is_cut_off_at_the_call_timeout() {
    let (app, _) = app().await;
    let started = tokio::time::Instant::now();
    let (response, json) = send(app, get(&format!("/api/v1/products/{SLOW_SKU}"))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["error"]["code"], "service_unavailable");
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    assert!(
        started.elapsed() < CALL_TIMEOUT * 5,
        "{:?}",
        started.elapsed()
    );
}

/// A port that was free a moment ago.
async fn free_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("local addr")
}

/// A minimal HTTP/1.1 GET, so the test needs no HTTP client crate.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

async fn wait_until_listening(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on {addr}");
}

#[tokio::test]
async fn run_serves_reports_readiness_and_stops_on_shutdown() {
    let (url, _) = spawn_upstreams().await;
    let mut config = config(&url);
    config.http_addr = free_port().await;
    config.ops_addr = free_port().await;
    let (http_addr, ops_addr) = (config.http_addr, config.ops_addr);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run(config, shutdown.clone()));
    wait_until_listening(http_addr).await;
    wait_until_listening(ops_addr).await;

    let products = http_get(http_addr, "/api/v1/products").await;
    assert!(products.starts_with("HTTP/1.1 200"), "{products}");
    let ready = http_get(ops_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains(r#""order":"ok""#), "{ready}");
    assert!(ready.contains(r#""inventory":"ok""#), "{ready}");

    shutdown.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stops promptly")
        .expect("no panic");
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[tokio::test]
async fn not_ready_while_an_upstream_is_down() {
    let (url, _) = spawn_upstreams().await;
    let mut config = config(&url);
    config.inventory_url = "http://127.0.0.1:1".into();
    config.http_addr = free_port().await;
    config.ops_addr = free_port().await;
    let ops_addr = config.ops_addr;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run(config, shutdown.clone()));
    wait_until_listening(ops_addr).await;

    let ready = http_get(ops_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains(r#""order":"ok""#), "{ready}");
    assert!(ready.contains(r#""inventory":{"error""#), "{ready}");

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
