//! The HTTP handlers. Each one validates, makes one gRPC call and converts
//! the answer; the rules live in `validation`, the shapes in `api`, the
//! error mapping in `error`, the stale-catalog fallback in `catalog_cache`
//! and the resilience stack around each call in `upstream`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use shipshape_proto::{inventory, order};
use shipshape_types::{OrderId, Sku};
use tokio::time::Instant;

use crate::AppState;
use crate::api::{
    self, CreateOrderBody, OrderAcceptedJson, OrderJson, ProductJson, ProductListJson, RestockBody,
};
use crate::catalog_cache::{CatalogAnswer, CatalogCache};
use crate::error::ApiError;
use crate::validation::{self, IdempotencyKey};

const ORDER_SERVICE: &str = "order";
const INVENTORY_SERVICE: &str = "inventory";

/// Set on a `202` that answers a retried request with the order created the
/// first time, so a client can tell a replay from a fresh order.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Every order is placed as a guest until the API authenticates callers;
/// then this becomes the authenticated customer's id.
fn customer_id() -> &'static str {
    "guest"
}

/// `GET /api/v1/products`: the catalog with prices and current availability,
/// or the last good catalog while inventory is unavailable.
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
#[tracing::instrument(skip_all)]
pub async fn create_order(
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
    let request = api::create_order_request(new_order, customer_id(), &idempotency_key);
    let response = state
        .orders
        .create_order(request)
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

/// `GET /api/v1/orders/{id}`: the order and where its checkout stands.
#[tracing::instrument(skip_all)]
pub async fn get_order(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderJson>, ApiError> {
    let Path(id) = id?;
    let id: OrderId = id.parse()?;
    let order = state
        .orders
        .get_order(order::GetOrderRequest {
            order_id: id.to_string(),
        })
        .await
        .map_err(|status| ApiError::upstream(ORDER_SERVICE, &status))?;
    let order =
        OrderJson::try_from(order).map_err(|e| ApiError::malformed_response(ORDER_SERVICE, e))?;
    Ok(Json(order))
}

/// `PUT /api/v1/admin/products/{sku}/stock` with `{"add": n}`: adds `n`
/// units to the product's stock and answers the product as it is now. Only
/// routed when `ADMIN_TOKEN` is set, behind [`crate::admin::require_token`].
/// Never retried by the gateway: a restock whose answer was lost may have
/// been applied, and applying it twice would add the units twice.
#[tracing::instrument(skip_all)]
pub async fn restock_product(
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
        .restock_product(inventory::RestockProductRequest {
            sku: sku.as_str().to_owned(),
            quantity: units,
        })
        .await
        .map_err(|status| ApiError::upstream(INVENTORY_SERVICE, &status))?;
    tracing::info!(sku = %sku, added = units, available = product.available, "restocked");
    let product = ProductJson::try_from(product)
        .map_err(|e| ApiError::malformed_response(INVENTORY_SERVICE, e))?;
    Ok(Json(product))
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
