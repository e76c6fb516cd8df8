//! The gateway against in-process fakes of the order and inventory services:
//! what a successful call looks like over HTTP, how upstream errors and
//! timeouts surface, the resilience stack around every call (timeouts,
//! retries, the breaker), the stale catalog while inventory is down, load
//! shedding, and that `run` serves, reports readiness and stops.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use shipshape_auth::Identity;
use shipshape_gateway::{Config, run};
use shipshape_proto::common;
use shipshape_proto::inventory::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use shipshape_proto::inventory::{
    GetProductRequest, ListProductsRequest, ListProductsResponse, PriceSkusRequest,
    PriceSkusResponse, Product, RestockProductRequest,
};
use shipshape_proto::order::order_service_server::{OrderService, OrderServiceServer};
use shipshape_proto::order::{
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, GetOrderTimelineRequest,
    ListOrdersRequest, ListOrdersResponse, Order, OrderLine, OrderStatus, OrderTimeline,
    RebuildOrderTimelinesRequest, RebuildOrderTimelinesResponse, WatchOrderTimelineRequest,
};
use shipshape_resilience::{BreakerConfig, ResilienceConfig, RetryConfig, TimeoutConfig};
use shipshape_runtime::CancellationToken;
use shipshape_types::ShippingAddress;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tower::ServiceExt;

mod support;
use support::{CUSTOMER, app_with, bearer};

const ORDER_ID: &str = "0193b6d2-7c1e-7a3b-9f00-1234567890ab";
/// An order the fake order service answers only after the gateway has given
/// up.
const SLOW_ORDER_ID: &str = "0193b6d2-7c1e-7a3b-9f00-00000000510e";
/// A sku the fake inventory answers only after the gateway has given up.
const SLOW_SKU: &str = "SKU-SLOW";
/// The gateway's per-attempt timeout in these tests; the slow sku and order
/// take longer.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the fakes take to answer for the slow sku and the slow order.
const SLOW_ANSWER: Duration = Duration::from_secs(3);

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

/// Statuses a fake answers instead of its real answer, one per call.
#[derive(Clone, Default)]
struct Failures(Arc<Mutex<VecDeque<Status>>>);

impl Failures {
    fn push(&self, status: Status) {
        self.0.lock().expect("lock").push_back(status);
    }

    fn next(&self) -> Result<(), Status> {
        match self.0.lock().expect("lock").pop_front() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }
}

/// Answers from fixed data, and like the real order service replays the
/// order stored under a repeated idempotency key. Records every order
/// request and counts every call.
#[derive(Clone, Default)]
struct FakeOrders {
    calls: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<CreateOrderRequest>>>,
    /// The caller each call was made for, as the gateway forwarded it.
    callers: Arc<Mutex<Vec<Identity>>>,
    /// The ListOrders requests received.
    listings: Arc<Mutex<Vec<ListOrdersRequest>>>,
    /// Idempotency keys of the orders stored.
    keys: Arc<Mutex<HashSet<String>>>,
    /// Orders stored (replays not counted).
    placed: Arc<AtomicUsize>,
    /// Answered instead of the next calls' answers, before doing anything.
    failures: Failures,
    /// CreateOrder calls still to come whose order is stored but whose
    /// answer is lost on its way back (`UNAVAILABLE`).
    lost_answers: Arc<AtomicUsize>,
}

impl FakeOrders {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<CreateOrderRequest> {
        self.requests.lock().expect("lock").clone()
    }

    fn callers(&self) -> Vec<Identity> {
        self.callers.lock().expect("lock").clone()
    }

    /// Records who the call is for; a call without a caller is refused,
    /// as the real service refuses it.
    fn caller<T>(&self, request: &GrpcRequest<T>) -> Result<(), Status> {
        let caller = Identity::from_metadata(request.metadata())?;
        self.callers.lock().expect("lock").push(caller);
        Ok(())
    }

    fn placed(&self) -> usize {
        self.placed.load(Ordering::SeqCst)
    }

    fn lose_next_answer(&self) {
        self.lost_answers.fetch_add(1, Ordering::SeqCst);
    }
}

/// A request for `quantity` of SKU-0001 to Ada Lovelace in Berlin.
fn one_line_order(quantity: i64) -> CreateOrderRequest {
    CreateOrderRequest {
        lines: vec![shipshape_proto::order::LineRequest {
            sku: "SKU-0001".into(),
            quantity,
        }],
        shipping_address: Some(ShippingAddress::example().into()),
        ..Default::default()
    }
}

fn stored_order(request: &CreateOrderRequest) -> Order {
    Order {
        order_id: ORDER_ID.into(),
        customer_id: CUSTOMER.into(),
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
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.caller(&request)?;
        let request = request.into_inner();
        self.requests.lock().expect("lock").push(request.clone());
        self.failures.next()?;
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
        let key = &request.idempotency_key;
        let replayed = !key.is_empty() && !self.keys.lock().expect("lock").insert(key.clone());
        if !replayed {
            self.placed.fetch_add(1, Ordering::SeqCst);
        }
        let lost = self
            .lost_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if lost.is_ok() {
            return Err(Status::unavailable("connection reset"));
        }
        Ok(GrpcResponse::new(CreateOrderResponse {
            order: Some(stored_order(&request)),
            replayed,
        }))
    }

    async fn get_order(
        &self,
        request: GrpcRequest<GetOrderRequest>,
    ) -> Result<GrpcResponse<Order>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.caller(&request)?;
        self.failures.next()?;
        match request.get_ref().order_id.as_str() {
            ORDER_ID => {}
            SLOW_ORDER_ID => tokio::time::sleep(SLOW_ANSWER).await,
            _ => return Err(Status::not_found("no such order")),
        }
        let mut order = stored_order(&one_line_order(2));
        order.status = OrderStatus::Cancelled as i32;
        order.cancellation_reason = "out_of_stock".into();
        order.completed_at_micros = 1_738_315_802_000_000;
        Ok(GrpcResponse::new(order))
    }

    async fn get_order_timeline(
        &self,
        _request: GrpcRequest<GetOrderTimelineRequest>,
    ) -> Result<GrpcResponse<OrderTimeline>, Status> {
        Err(Status::unimplemented("not played by this fake"))
    }

    type WatchOrderTimelineStream =
        tokio_stream::wrappers::ReceiverStream<Result<OrderTimeline, Status>>;

    async fn watch_order_timeline(
        &self,
        _request: GrpcRequest<WatchOrderTimelineRequest>,
    ) -> Result<GrpcResponse<Self::WatchOrderTimelineStream>, Status> {
        Err(Status::unimplemented("not played by this fake"))
    }

    async fn rebuild_order_timelines(
        &self,
        _request: GrpcRequest<RebuildOrderTimelinesRequest>,
    ) -> Result<GrpcResponse<RebuildOrderTimelinesResponse>, Status> {
        Err(Status::unimplemented("not played by this fake"))
    }

    async fn list_orders(
        &self,
        request: GrpcRequest<ListOrdersRequest>,
    ) -> Result<GrpcResponse<ListOrdersResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.caller(&request)?;
        let request = request.into_inner();
        self.listings.lock().expect("lock").push(request.clone());
        let order = stored_order(&one_line_order(1));
        Ok(GrpcResponse::new(ListOrdersResponse {
            orders: vec![order],
            next_page_token: "next-page".into(),
        }))
    }
}

/// Answers from fixed data, or `Unavailable` while `down` is set. Counts
/// every call.
#[derive(Clone, Default)]
struct FakeInventory {
    calls: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    /// Answered instead of the next calls' answers.
    failures: Failures,
    /// Notified when a request for the slow sku arrives.
    slow_started: Arc<Notify>,
}

impl FakeInventory {
    fn check_up(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.failures.next()?;
        if self.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("inventory is restarting"));
        }
        Ok(())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

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
        self.check_up()?;
        Ok(GrpcResponse::new(ListProductsResponse {
            products: vec![teapot()],
        }))
    }

    async fn get_product(
        &self,
        request: GrpcRequest<GetProductRequest>,
    ) -> Result<GrpcResponse<Product>, Status> {
        self.check_up()?;
        match request.get_ref().sku.as_str() {
            "SKU-0001" => Ok(GrpcResponse::new(teapot())),
            SLOW_SKU => {
                self.slow_started.notify_one();
                tokio::time::sleep(SLOW_ANSWER).await;
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

    async fn restock_product(
        &self,
        request: GrpcRequest<RestockProductRequest>,
    ) -> Result<GrpcResponse<Product>, Status> {
        self.check_up()?;
        let request = request.into_inner();
        if request.sku != "SKU-0001" {
            return Err(Status::not_found("no such product"));
        }
        Ok(GrpcResponse::new(Product {
            available: teapot().available + request.quantity,
            ..teapot()
        }))
    }
}

/// The running fakes: `url` serves either service.
struct Upstreams {
    url: String,
    orders: FakeOrders,
    inventory: FakeInventory,
}

/// Both fakes on one port.
async fn spawn_upstreams() -> Upstreams {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let orders = FakeOrders::default();
    let inventory = FakeInventory::default();
    let server = Server::builder()
        .add_service(OrderServiceServer::new(orders.clone()))
        .add_service(InventoryServiceServer::new(inventory.clone()))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    Upstreams {
        url: format!("http://{addr}"),
        orders,
        inventory,
    }
}

/// The stack's defaults with the tests' call timeout, and short backoffs so
/// retrying tests stay fast.
fn resilience() -> ResilienceConfig {
    ResilienceConfig {
        timeout: TimeoutConfig {
            enabled: true,
            duration: CALL_TIMEOUT,
        },
        retry: RetryConfig {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
            ..RetryConfig::default()
        },
        ..ResilienceConfig::default()
    }
}

/// The defaults with the tests' resilience settings, against `upstream_url`.
fn config(upstream_url: &str) -> Config {
    Config {
        order: resilience(),
        inventory: resilience(),
        ..support::config(upstream_url)
    }
}

/// Sends `request` as [`CUSTOMER`], unless it carries credentials of its
/// own.
async fn send(app: axum::Router, mut request: Request<Body>) -> (Response, Value) {
    if !request.headers().contains_key(AUTHORIZATION) {
        let value = bearer(CUSTOMER, &[]).parse().expect("header value");
        request.headers_mut().insert(AUTHORIZATION, value);
    }
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

async fn app() -> (axum::Router, Upstreams) {
    let upstreams = spawn_upstreams().await;
    (app_with(&config(&upstreams.url)), upstreams)
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
    let (app, upstreams) = app().await;
    let (response, json) = send(app, post_order(Some("checkout-1"), &order_body())).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{json}");
    assert_eq!(json, json!({"order_id": ORDER_ID, "status": "PENDING"}));
    assert_eq!(
        response.headers()[LOCATION],
        format!("/api/v1/orders/{ORDER_ID}").as_str()
    );
    assert!(response.headers().get("idempotent-replayed").is_none());

    let sent = upstreams.orders.requests();
    let [sent] = sent.as_slice() else {
        panic!("one call expected: {sent:?}");
    };
    // The caller travels in the metadata, as the token named them.
    let callers = upstreams.orders.callers();
    assert_eq!(callers.len(), 1);
    assert_eq!(callers[0].subject(), CUSTOMER);
    assert_eq!(sent.idempotency_key, "checkout-1");
    assert_eq!(sent.card_token, "tok_visa");
    assert_eq!(sent.lines.len(), 2);
    assert_eq!(
        (sent.lines[0].sku.as_str(), sent.lines[0].quantity),
        ("SKU-0001", 2)
    );
    let address = sent.shipping_address.as_ref().expect("address");
    assert_eq!(
        (address.line2.as_str(), address.country.as_str()),
        ("", "DE")
    );
}

#[tokio::test]
async fn listing_orders_asks_for_the_callers_page_and_passes_the_token_on() {
    let (app, upstreams) = app().await;
    let (response, json) = send(
        app.clone(),
        get("/api/v1/orders?limit=5&page_token=after-this"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{json}");
    assert_eq!(json["orders"][0]["order_id"], ORDER_ID);
    assert_eq!(json["next_page_token"], "next-page");
    let listings = upstreams.orders.listings.lock().expect("lock").clone();
    assert_eq!(listings.len(), 1);
    assert_eq!(
        (listings[0].page_size, listings[0].page_token.as_str()),
        (5, "after-this")
    );
    assert_eq!(upstreams.orders.callers()[0].subject(), CUSTOMER);

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("limit=ten", "invalid_query"),
        ("sort=newest", "invalid_query"),
    ] {
        let (response, json) = send(app.clone(), get(&format!("/api/v1/orders?{query}"))).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{query}: {json}"
        );
        assert_eq!(json["error"]["code"], code, "{query}");
    }
    assert_eq!(
        upstreams.orders.calls(),
        1,
        "bad queries never reach the service"
    );
}

#[tokio::test]
async fn without_a_key_the_gateway_makes_one_per_request() {
    let (app, upstreams) = app().await;
    for _ in 0..2 {
        let (response, json) = send(app.clone(), post_order(None, &order_body())).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{json}");
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
    let sent = upstreams.orders.requests();
    let keys: Vec<&str> = sent.iter().map(|r| r.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        let uuid = key.strip_prefix("gw-").expect("a gateway key");
        let uuid = uuid::Uuid::parse_str(uuid).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 4, "{key}");
    }
    assert_ne!(keys[0], keys[1]);
    assert_eq!(upstreams.orders.placed(), 2);
}

#[tokio::test]
async fn a_replay_is_still_202_and_says_so() {
    let (app, upstreams) = app().await;
    let (response, _) = send(app.clone(), post_order(Some("checkout-1"), &order_body())).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().get("idempotent-replayed").is_none());

    let (response, json) = send(app, post_order(Some("checkout-1"), &order_body())).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(json, json!({"order_id": ORDER_ID, "status": "PENDING"}));
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(upstreams.orders.placed(), 1);
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
async fn the_remembered_catalog_is_served_while_inventory_is_down() {
    let upstreams = spawn_upstreams().await;
    let app = app_with(&config(&upstreams.url));
    let down = &upstreams.inventory.down;

    // Nothing remembered yet: the failure stands.
    down.store(true, Ordering::SeqCst);
    let (response, json) = send(app.clone(), get("/api/v1/products")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(response.headers()[RETRY_AFTER], "1");

    down.store(false, Ordering::SeqCst);
    let (response, fresh) = send(app.clone(), get("/api/v1/products")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("catalog-stale").is_none());
    assert!(response.headers().get("age").is_none());

    down.store(true, Ordering::SeqCst);
    let (response, stale) = send(app.clone(), get("/api/v1/products")).await;
    assert_eq!(response.status(), StatusCode::OK, "{stale}");
    assert_eq!(response.headers()["catalog-stale"], "true");
    assert_eq!(response.headers()["age"], "0");
    assert_eq!(stale, fresh);

    // Products of the remembered catalog, too; never one it did not have.
    let (response, json) = send(app.clone(), get("/api/v1/products/SKU-0001")).await;
    assert_eq!(response.status(), StatusCode::OK, "{json}");
    assert_eq!(response.headers()["catalog-stale"], "true");
    assert_eq!(json["sku"], "SKU-0001");
    let (response, _) = send(app, get("/api/v1/products/SKU-0404")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn requests_beyond_max_in_flight_are_shed() {
    let upstreams = spawn_upstreams().await;
    let app = app_with(&Config {
        max_in_flight: NonZeroUsize::new(1).expect("non-zero"),
        ..config(&upstreams.url)
    });
    let slow = tokio::spawn(send(
        app.clone(),
        get(&format!("/api/v1/products/{SLOW_SKU}")),
    ));
    upstreams.inventory.slow_started.notified().await;

    let (response, json) = send(app.clone(), get("/api/v1/products/SKU-0001")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["error"]["code"], "overloaded");
    assert_eq!(response.headers()[RETRY_AFTER], "1");

    // The slow call ends at the call timeout and frees its place.
    let (response, _) = slow.await.expect("no panic");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (response, _) = send(app, get("/api/v1/products/SKU-0001")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_slow_upstream_is_cut_off_at_the_call_timeout() {
    let (app, upstreams) = app().await;
    let started = Instant::now();
    let (response, json) = send(app, get(&format!("/api/v1/products/{SLOW_SKU}"))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["error"]["code"], "timeout");
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    // A read: every attempt gets the full timeout, then the next one.
    assert_eq!(upstreams.inventory.calls(), 3);
    let elapsed = started.elapsed();
    assert!(elapsed >= CALL_TIMEOUT * 3, "{elapsed:?}");
    // Cut off, not waited for: an attempt that waited for the slow sku's
    // answer would alone take `SLOW_ANSWER`, over three times the three
    // timeouts. When exactly a timeout fires is pinned in paused time by
    // `shipshape_resilience`'s own tests; here real sockets rule that out
    // (with nothing to run, the clock would jump past the timeouts while
    // loopback bytes are in flight), and a tighter bound (five timeouts)
    // measured the machine beside the stacks.
    assert!(elapsed < SLOW_ANSWER, "{elapsed:?}");
}

#[tokio::test]
async fn a_slow_order_service_is_503_at_the_order_timeout() {
    let upstreams = spawn_upstreams().await;
    let timeout = Duration::from_millis(200);
    let order = ResilienceConfig {
        timeout: TimeoutConfig {
            enabled: true,
            duration: timeout,
        },
        retry: RetryConfig {
            enabled: false,
            ..RetryConfig::default()
        },
        ..resilience()
    };
    // The order service's own setting applies, not inventory's.
    let inventory = ResilienceConfig {
        timeout: TimeoutConfig {
            enabled: true,
            duration: Duration::from_secs(30),
        },
        ..resilience()
    };
    let app = app_with(&Config {
        order,
        inventory,
        ..config(&upstreams.url)
    });

    let started = Instant::now();
    let (response, json) = send(app, get(&format!("/api/v1/orders/{SLOW_ORDER_ID}"))).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["error"]["code"], "timeout");
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    assert!(elapsed >= timeout, "{elapsed:?}");
    // Cut off by the order setting: under inventory's 30 s the call would
    // have waited for the slow order's answer (`SLOW_ANSWER`, fifteen of
    // these timeouts). Half of that still tells them apart and leaves room
    // for a busy machine, which three timeouts (600 ms) did not.
    assert!(elapsed < SLOW_ANSWER / 2, "{elapsed:?}");
    assert_eq!(upstreams.orders.calls(), 1);
}

#[tokio::test]
async fn a_read_is_retried_after_a_transient_failure() {
    let (app, upstreams) = app().await;
    upstreams
        .inventory
        .failures
        .push(Status::unavailable("inventory is restarting"));
    let (response, json) = send(app, get("/api/v1/products/SKU-0001")).await;
    assert_eq!(response.status(), StatusCode::OK, "{json}");
    assert!(response.headers().get("catalog-stale").is_none());
    assert_eq!(json["sku"], "SKU-0001");
    assert_eq!(upstreams.inventory.calls(), 2);
}

fn restock(body: &str) -> Request<Body> {
    Request::put("/api/v1/admin/products/SKU-0001/stock")
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, bearer("operator", &["admin"]))
        .body(Body::from(body.to_owned()))
        .expect("request")
}

#[tokio::test]
async fn a_restock_answers_the_product_with_its_new_stock() {
    let (app, upstreams) = app().await;
    let (response, json) = send(app, restock(r#"{"add": 93}"#)).await;
    assert_eq!(response.status(), StatusCode::OK, "{json}");
    assert_eq!(json["sku"], "SKU-0001");
    assert_eq!(json["available"], teapot().available + 93);
    assert_eq!(upstreams.inventory.calls(), 1);
}

#[tokio::test]
async fn a_failed_restock_is_never_retried() {
    let (app, upstreams) = app().await;
    upstreams
        .inventory
        .failures
        .push(Status::unavailable("inventory is restarting"));
    let (response, json) = send(app, restock(r#"{"add": 5}"#)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["error"]["code"], "service_unavailable");
    // Retrying could add the units twice if the first attempt was applied.
    assert_eq!(upstreams.inventory.calls(), 1);
}

#[tokio::test]
async fn an_order_whose_answer_was_lost_is_retried_and_placed_once() {
    let (app, upstreams) = app().await;
    upstreams.orders.lose_next_answer();
    let (response, json) = send(app, post_order(None, &order_body())).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{json}");
    assert_eq!(json, json!({"order_id": ORDER_ID, "status": "PENDING"}));
    // The retry found the order its first attempt stored: one order, and to
    // the client, who sent no key, a new one.
    assert!(response.headers().get("idempotent-replayed").is_none());
    let sent = upstreams.orders.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].idempotency_key, sent[1].idempotency_key);
    assert_eq!(upstreams.orders.placed(), 1);
}

#[tokio::test]
async fn answers_about_the_request_are_never_retried() {
    let (app, upstreams) = app().await;
    let (response, _) = send(app.clone(), get("/api/v1/products/SKU-0404")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(upstreams.inventory.calls(), 1);

    let mut body = order_body();
    body["items"][1]["sku"] = json!("SKU-9999");
    let (response, _) = send(app.clone(), post_order(None, &body)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(upstreams.orders.calls(), 1);

    let (response, _) = send(
        app,
        get("/api/v1/orders/00000000-0000-4000-8000-000000000000"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(upstreams.orders.calls(), 2);
}

#[tokio::test]
async fn once_inventory_keeps_failing_the_breaker_stops_calling_it() {
    let upstreams = spawn_upstreams().await;
    let inventory = ResilienceConfig {
        breaker: BreakerConfig {
            window: 4,
            min_calls: 4,
            failure_percent: 75,
            open_for: Duration::from_secs(60),
            ..BreakerConfig::default()
        },
        ..resilience()
    };
    let app = app_with(&Config {
        inventory,
        ..config(&upstreams.url)
    });
    let fake = &upstreams.inventory;
    let (response, fresh) = send(app.clone(), get("/api/v1/products")).await;
    assert_eq!(response.status(), StatusCode::OK, "{fresh}");

    // Three failed attempts (the first and two retries) after the success:
    // 3 of 4 calls failed, and the breaker opens. The remembered catalog
    // stands in.
    fake.down.store(true, Ordering::SeqCst);
    let (response, stale) = send(app.clone(), get("/api/v1/products")).await;
    assert_eq!(response.status(), StatusCode::OK, "{stale}");
    assert_eq!(response.headers()["catalog-stale"], "true");
    assert_eq!(fake.calls(), 4);

    // Open: nothing reaches inventory, so nothing waits for it. The call
    // count shows it; a clock would not (the fake fails at once anyway, so
    // a bound on these answers' time measured only the machine).
    let (response, stale) = send(app.clone(), get("/api/v1/products")).await;
    assert_eq!(response.status(), StatusCode::OK, "{stale}");
    assert_eq!(response.headers()["catalog-stale"], "true");
    assert_eq!(stale, fresh);
    let (response, json) = send(app, get("/api/v1/products/SKU-0002")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["error"]["code"], "circuit_open");
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    assert_eq!(fake.calls(), 4);
}

#[tokio::test]
async fn inventory_down_behind_the_order_service_is_not_held_against_it() {
    let (app, upstreams) = app().await;
    // More than enough to open the order service's breaker, were they
    // counted as its failures.
    for _ in 0..12 {
        upstreams.orders.failures.push(status_with_code(
            tonic::Code::Unavailable,
            "inventory is unavailable",
            "inventory_unavailable",
        ));
        let (response, json) = send(app.clone(), post_order(None, &order_body())).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert_eq!(json["error"]["code"], "inventory_unavailable");
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }
    // The order service already retried inventory; the gateway does not.
    assert_eq!(upstreams.orders.calls(), 12);

    let (response, json) = send(app, get(&format!("/api/v1/orders/{ORDER_ID}"))).await;
    assert_eq!(response.status(), StatusCode::OK, "{json}");
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
    let upstreams = spawn_upstreams().await;
    let mut config = config(&upstreams.url);
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

/// Readiness means "this gateway can answer": with inventory down it still
/// answers (503 with Retry-After here, its last catalog once it has one),
/// so it stays ready and in its Service; the outage is reported beside.
#[tokio::test]
async fn ready_while_an_upstream_is_down_which_it_reports() {
    let upstreams = spawn_upstreams().await;
    let mut config = config(&upstreams.url);
    config.inventory_url = "http://127.0.0.1:1".into();
    config.http_addr = free_port().await;
    config.ops_addr = free_port().await;
    let (http_addr, ops_addr) = (config.http_addr, config.ops_addr);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run(config, shutdown.clone()));
    wait_until_listening(http_addr).await;
    wait_until_listening(ops_addr).await;

    let ready = http_get(ops_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains(r#""checks":{}"#), "{ready}");
    assert!(ready.contains(r#""order":"ok""#), "{ready}");
    assert!(ready.contains(r#""inventory":{"error""#), "{ready}");
    let products = http_get(http_addr, "/api/v1/products").await;
    assert!(products.starts_with("HTTP/1.1 503"), "{products}");
    assert!(
        products.to_ascii_lowercase().contains("retry-after"),
        "{products}"
    );

    // An upstream that is down never makes the gateway fail.
    shutdown.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stops promptly")
        .expect("no panic");
    assert!(outcome.is_ok(), "{outcome:?}");
}
