//! The HTTP handlers. Each one validates, makes one gRPC call and converts
//! the answer; the rules live in `validation`, the shapes in `api`, the
//! error mapping in `error`, the stale-catalog fallback in `catalog_cache`
//! and the resilience stack around each call in `upstream`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, KeepAliveStream, Sse};
use axum::response::{IntoResponse, Response};
use shipshape_proto::{inventory, order};
use shipshape_runtime::CancellationToken;
use shipshape_types::{OrderId, Sku};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::{
    CreateOrderBody, ListOrdersQuery, OrderAcceptedJson, OrderJson, OrderListJson, ProductJson,
    ProductListJson, RebuildJson, RestockBody, TimelineJson,
};
use crate::auth::{Admin, Customer};
use crate::catalog_cache::{CatalogAnswer, CatalogCache};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::validation::{self, IdempotencyKey, NewOrder};

const ORDER_SERVICE: &str = "order";
const INVENTORY_SERVICE: &str = "inventory";

/// Set on a `202` that answers a retried request with the order created the
/// first time, so a client can tell a replay from a fresh order.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// `GET /api/v1/products`: the catalog with prices and current availability,
/// or the last good catalog while inventory is unavailable.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "catalog",
    responses(
        (status = 200, description = "The catalog", body = ProductListJson,
            headers(
                ("Catalog-Stale" = String, description = "`true` when inventory is unavailable and this is the last good answer"),
                ("Age" = u64, description = "With `Catalog-Stale`: seconds since that answer was fetched"),
            )),
        (status = 401, description = "A bearer token was sent and refused (the route itself is public)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "An upstream service failed or answered something unusable (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`) or an upstream service is unavailable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn list_products(
    State(state): State<AppState>,
    State(catalog): State<Arc<CatalogCache>>,
) -> Result<CatalogAnswer<ProductListJson>, ApiError> {
    let upstream = state
        .inventory
        .list_products(inventory::ListProductsRequest {})
        .await
        .map(|response| response.products);
    catalog.list_products(upstream, Instant::now())
}

/// `GET /api/v1/products/{sku}`, or the last good answer for it while
/// inventory is unavailable.
#[utoipa::path(
    get,
    path = "/api/v1/products/{sku}",
    tag = "catalog",
    params(("sku" = String, Path, description = "1 to 32 upper-case letters, digits and dashes", min_length = 1, max_length = 32, pattern = "^[A-Z0-9-]{1,32}$", example = "SKU-0001")),
    responses(
        (status = 200, description = "The product", body = ProductJson,
            headers(
                ("Catalog-Stale" = String, description = "`true` when inventory is unavailable and this is the last good answer"),
                ("Age" = u64, description = "With `Catalog-Stale`: seconds since that answer was fetched"),
            )),
        (status = 400, description = "The request is malformed; `error.code` says how (`invalid_sku`, `invalid_json`, ...)", body = ErrorBody),
        (status = 401, description = "A bearer token was sent and refused (the route itself is public)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 404, description = "No such product (`not_found`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "An upstream service failed or answered something unusable (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`) or an upstream service is unavailable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn get_product(
    State(state): State<AppState>,
    State(catalog): State<Arc<CatalogCache>>,
    sku: Result<Path<String>, PathRejection>,
) -> Result<CatalogAnswer<ProductJson>, ApiError> {
    let Path(sku) = sku?;
    // A malformed sku cannot be in the catalog; answer without a call.
    let sku = Sku::parse(&sku)?;
    let upstream = state
        .inventory
        .get_product(inventory::GetProductRequest {
            sku: sku.as_str().to_owned(),
        })
        .await;
    catalog.product(&sku, upstream, Instant::now())
}

/// `POST /api/v1/orders`: places an order and answers `202 Accepted` at once;
/// the checkout saga runs afterwards and the client polls `Location`.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "orders",
    security(("bearerAuth" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to retry: the same key with the same body answers the order created the first time. 1 to 255 visible ASCII characters", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$"),
    ),
    request_body(content = CreateOrderBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The order is placed; its checkout runs in the background", body = OrderAcceptedJson,
            headers(
                ("Location" = String, description = "The order's URL, to poll"),
                ("Idempotent-Replayed" = String, description = "`true` when this answers an earlier request with the same `Idempotency-Key`"),
            )),
        (status = 400, description = "The request is malformed; `error.code` says how (`invalid_sku`, `invalid_json`, ...)", body = ErrorBody),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 408, description = "The body arrived too slowly (`body_timeout`); the connection is closed", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `Content-Type: application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "The `Idempotency-Key` was used before for a different request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "An upstream service failed or answered something unusable (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`) or an upstream service is unavailable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn create_order(
    Customer(caller): Customer,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateOrderBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let new_order = validation::new_order(body)?;
    let client_key = validation::idempotency_key(&headers)?;
    let keyed_by_client = client_key.is_some();
    // Without the client's key, one made for this request alone, so the
    // gateway's own retries of the call replay the order instead of placing
    // a second one.
    let idempotency_key = client_key.unwrap_or_else(IdempotencyKey::generate);
    let request = create_order_request(new_order, &idempotency_key);
    let response = state
        .orders
        .create_order(&caller, request)
        .await
        .map_err(|status| ApiError::upstream(ORDER_SERVICE, &status))?;
    // A replay under a key the gateway made up can only be its own retry
    // finding the order an earlier attempt of this request created (whose
    // answer was lost): for the client, that order is new. Under the
    // client's key, the order service's word stands.
    let replayed = response.replayed && keyed_by_client;

    let order = response.order.ok_or_else(|| {
        ApiError::malformed_response(ORDER_SERVICE, "the created order is missing")
    })?;
    let accepted = OrderAcceptedJson::try_from(&order)
        .map_err(|e| ApiError::malformed_response(ORDER_SERVICE, e))?;
    // The id is a parsed UUID, so the header value is always valid ASCII.
    let location = HeaderValue::try_from(format!("/api/v1/orders/{}", accepted.order_id))
        .map_err(|e| ApiError::malformed_response(ORDER_SERVICE, e))?;
    tracing::info!(order_id = %accepted.order_id, replayed, "order accepted");

    let mut headers = HeaderMap::new();
    headers.insert(LOCATION, location);
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok((StatusCode::ACCEPTED, headers, Json(accepted)).into_response())
}

/// The gRPC request for a validated order.
fn create_order_request(
    order: NewOrder,
    idempotency_key: &IdempotencyKey,
) -> order::CreateOrderRequest {
    order::CreateOrderRequest {
        lines: order
            .lines
            .into_iter()
            .map(|line| order::LineRequest {
                sku: line.sku.into(),
                quantity: line.quantity.get(),
            })
            .collect(),
        card_token: order.card_token.expose().to_owned(),
        shipping_address: Some(order.shipping_address.into()),
        idempotency_key: idempotency_key.as_str().to_owned(),
    }
}

/// `GET /api/v1/orders/{id}`: the order and where its checkout stands; 404
/// for another customer's order, as for one that does not exist.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The order id (a UUID)", format = "uuid")),
    responses(
        (status = 200, description = "The order", body = OrderJson),
        (status = 400, description = "The request is malformed; `error.code` says how (`invalid_sku`, `invalid_json`, ...)", body = ErrorBody),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 404, description = "No such order of the caller's (`not_found`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "An upstream service failed or answered something unusable (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`) or an upstream service is unavailable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn get_order(
    Customer(caller): Customer,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderJson>, ApiError> {
    let Path(id) = id?;
    let id: OrderId = id.parse()?;
    let order = state
        .orders
        .get_order(
            &caller,
            order::GetOrderRequest {
                order_id: id.to_string(),
            },
        )
        .await
        .map_err(|status| ApiError::upstream(ORDER_SERVICE, &status))?;
    let order =
        OrderJson::try_from(order).map_err(|e| ApiError::malformed_response(ORDER_SERVICE, e))?;
    Ok(Json(order))
}

/// `GET /api/v1/orders/{id}/timeline`: every saga step of the order so far;
/// 404 for another customer's order, as for one that does not exist.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}/timeline",
    tag = "orders",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The order id (a UUID)", format = "uuid")),
    responses(
        (status = 200, description = "The order's saga steps, in the order they happened", body = TimelineJson),
        (status = 400, description = "The request is malformed; `error.code` says how (`invalid_order_id`, ...)", body = ErrorBody),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 404, description = "No such order of the caller's (`not_found`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "An upstream service failed or answered something unusable (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`) or an upstream service is unavailable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn get_order_timeline(
    Customer(caller): Customer,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TimelineJson>, ApiError> {
    let Path(id) = id?;
    let id: OrderId = id.parse()?;
    let timeline = state
        .orders
        .get_order_timeline(
            &caller,
            order::GetOrderTimelineRequest {
                order_id: id.to_string(),
            },
        )
        .await
        .map_err(|status| ApiError::upstream(ORDER_SERVICE, &status))?;
    let timeline = TimelineJson::try_from(timeline)
        .map_err(|e| ApiError::malformed_response(ORDER_SERVICE, e))?;
    Ok(Json(timeline))
}

/// `GET /api/v1/orders/{id}/timeline/stream`: the timeline live, as
/// Server-Sent Events. Each event (`event: timeline`) is a `TimelineJson`
/// with the order's status and the steps recorded since the last event, its
/// `id` the last step's sequence; a reconnecting `EventSource` sends that
/// back as `Last-Event-ID` and gets only what it missed. A stream ends after
/// [`STREAM_LIFETIME`], or when the gateway shuts down: browsers reconnect.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}/timeline/stream",
    tag = "orders",
    security(("bearerAuth" = [])),
    params(
        ("id" = String, Path, description = "The order id (a UUID)", format = "uuid"),
        ("Last-Event-ID" = Option<i64>, Header, description = "The `id` of the last event received: only later steps are sent", minimum = 0),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: one `timeline` event at once (the status and every step after `Last-Event-ID`), then one per step as it is recorded; a comment every 15 s keeps the connection open", content_type = "text/event-stream", body = String),
        (status = 400, description = "The request is malformed; `error.code` says how (`invalid_order_id`, `invalid_last_event_id`)", body = ErrorBody),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 404, description = "No such order of the caller's (`not_found`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "An upstream service failed or answered something unusable (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`) or an upstream service is unavailable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn stream_order_timeline(
    Customer(caller): Customer,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Sse<KeepAliveStream<TimelineEvents>>, ApiError> {
    let Path(id) = id?;
    let id: OrderId = id.parse()?;
    let after = validation::last_event_id(&headers)?;
    let upstream = state
        .orders
        .watch_order_timeline(
            &caller,
            order::WatchOrderTimelineRequest {
                order_id: id.to_string(),
                after_sequence: after,
            },
        )
        .await
        .map_err(|status| ApiError::upstream(ORDER_SERVICE, &status))?;
    let (events, stream) = mpsc::channel(8);
    tokio::spawn(relay_timeline(upstream, events, state.streams.clone()));
    Ok(Sse::new(ReceiverStream::new(stream)).keep_alive(KeepAlive::default()))
}

/// The events of one timeline stream, as [`relay_timeline`] sends them.
pub type TimelineEvents = ReceiverStream<Result<SseEvent, Infallible>>;

/// How long one timeline stream runs before the gateway ends it; the
/// browser's `EventSource` reconnects, so no stream outlives a token's
/// lifetime by much, and a replica being drained loses its streams soon.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(300);

/// Turns the order service's timeline messages into events, until the
/// browser goes away, the upstream ends, [`STREAM_LIFETIME`] passes or
/// `shutdown`.
async fn relay_timeline(
    mut upstream: tonic::Streaming<order::OrderTimeline>,
    events: mpsc::Sender<Result<SseEvent, Infallible>>,
    shutdown: CancellationToken,
) {
    let end = tokio::time::sleep(STREAM_LIFETIME);
    tokio::pin!(end);
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = events.closed() => return,
            _ = &mut end => return,
            message = upstream.message() => message,
        };
        let update = match message {
            Ok(Some(update)) => update,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "timeline stream ended upstream");
                return;
            }
        };
        let newest = update.entries.iter().map(|entry| entry.sequence).max();
        let json = match TimelineJson::try_from(update) {
            Ok(json) => json,
            Err(error) => {
                tracing::warn!(%error, "the order service sent an unusable timeline");
                return;
            }
        };
        let mut event = SseEvent::default().event("timeline");
        if let Some(newest) = newest {
            event = event.id(newest.to_string());
        }
        let Ok(event) = event.json_data(json) else {
            return;
        };
        if events.send(Ok(event)).await.is_err() {
            return;
        }
    }
}

/// `GET /api/v1/orders?limit=&page_token=`: the caller's orders, newest
/// first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "orders",
    security(("bearerAuth" = [])),
    params(ListOrdersQuery),
    responses(
        (status = 200, description = "One page of the caller's orders, newest first", body = OrderListJson),
        (status = 400, description = "The request is malformed; `error.code` says how (`invalid_sku`, `invalid_json`, ...)", body = ErrorBody),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "An upstream service failed or answered something unusable (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`) or an upstream service is unavailable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn list_orders(
    Customer(caller): Customer,
    State(state): State<AppState>,
    query: Result<Query<ListOrdersQuery>, QueryRejection>,
) -> Result<Json<OrderListJson>, ApiError> {
    let Query(query) = query?;
    let page_size = validation::page_size(query.limit)?;
    let page = state
        .orders
        .list_orders(
            &caller,
            order::ListOrdersRequest {
                page_size,
                page_token: query.page_token.unwrap_or_default(),
            },
        )
        .await
        .map_err(|status| ApiError::upstream(ORDER_SERVICE, &status))?;
    let page = OrderListJson::try_from(page)
        .map_err(|e| ApiError::malformed_response(ORDER_SERVICE, e))?;
    Ok(Json(page))
}

/// `PUT /api/v1/admin/products/{sku}/stock` with `{"add": n}`: adds `n`
/// units to the product's stock and answers the product as it is now. For
/// callers with the `admin` scope only.
/// Never retried by the gateway: a restock whose answer was lost may have
/// been applied, and applying it twice would add the units twice.
#[utoipa::path(
    put,
    path = "/api/v1/admin/products/{sku}/stock",
    tag = "admin",
    security(("bearerAuth" = [])),
    params(("sku" = String, Path, description = "1 to 32 upper-case letters, digits and dashes", min_length = 1, max_length = 32, pattern = "^[A-Z0-9-]{1,32}$", example = "SKU-0001")),
    request_body(content = RestockBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The product with its new availability", body = ProductJson),
        (status = 400, description = "The request is malformed; `error.code` says how (`invalid_sku`, `invalid_json`, ...)", body = ErrorBody),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 403, description = "The token lacks the `admin` scope (`insufficient_scope`)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge, with `error=\"insufficient_scope\"`"))),
        (status = 404, description = "No such product (`not_found`)", body = ErrorBody),
        (status = 408, description = "The body arrived too slowly (`body_timeout`); the connection is closed", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `Content-Type: application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "An upstream service failed or answered something unusable (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`) or an upstream service is unavailable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn restock_product(
    Admin(caller): Admin,
    State(state): State<AppState>,
    sku: Result<Path<String>, PathRejection>,
    body: Result<Json<RestockBody>, JsonRejection>,
) -> Result<Json<ProductJson>, ApiError> {
    let Path(sku) = sku?;
    let sku = Sku::parse(&sku)?;
    let Json(body) = body?;
    let units = validation::restock_units(body.add)?;
    let product = state
        .inventory
        .restock_product(
            &caller,
            inventory::RestockProductRequest {
                sku: sku.as_str().to_owned(),
                quantity: units,
            },
        )
        .await
        .map_err(|status| ApiError::upstream(INVENTORY_SERVICE, &status))?;
    tracing::info!(sku = %sku, added = units, available = product.available, "restocked");
    let product = ProductJson::try_from(product)
        .map_err(|e| ApiError::malformed_response(INVENTORY_SERVICE, e))?;
    Ok(Json(product))
}

/// `POST /api/v1/admin/order-timelines/rebuild`: empties every order's
/// timeline and fills it again from the event topics, read from their
/// beginning. For callers with the `admin` scope only. Answers when the
/// rebuild is done; one runs at a time.
#[utoipa::path(
    post,
    path = "/api/v1/admin/order-timelines/rebuild",
    tag = "admin",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The timelines are rebuilt", body = RebuildJson),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 403, description = "The token lacks the `admin` scope (`insufficient_scope`)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge, with `error=\"insufficient_scope\"`"))),
        (status = 409, description = "Another rebuild is running (`rebuild_running`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "An upstream service failed or answered something unusable (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`), the order service is unavailable, or the topics could not be read (`rebuild_failed`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn rebuild_order_timelines(
    Admin(caller): Admin,
    State(state): State<AppState>,
) -> Result<Json<RebuildJson>, ApiError> {
    let rebuilt = state
        .orders
        .rebuild_order_timelines(&caller)
        .await
        .map_err(|status| ApiError::upstream(ORDER_SERVICE, &status))?;
    tracing::info!(
        events_read = rebuilt.events_read,
        steps_written = rebuilt.entries_written,
        "order timelines rebuilt"
    );
    Ok(Json(rebuilt.into()))
}

/// Any path the API does not have.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// A known path with a method it does not support; axum adds `Allow`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not supported on this path",
    )
}
