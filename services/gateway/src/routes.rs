//! The HTTP handlers. Each one validates, makes one gRPC call and converts
//! the answer; the rules live in `validation`, the shapes in `api` and the
//! error mapping in `error`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use shipshape_proto::{inventory, order};
use shipshape_types::{OrderId, Sku};

use crate::AppState;
use crate::api::{
    self, CreateOrderBody, OrderAcceptedJson, OrderJson, ProductJson, ProductListJson,
};
use crate::error::ApiError;
use crate::validation;

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

/// `GET /api/v1/products`: the catalog with prices and current availability.
#[tracing::instrument(skip_all)]
pub async fn list_products(
    State(state): State<AppState>,
) -> Result<Json<ProductListJson>, ApiError> {
    let response = state
        .inventory
        .clone()
        .list_products(inventory::ListProductsRequest {})
        .await
        .map_err(|status| ApiError::upstream(INVENTORY_SERVICE, &status))?
        .into_inner();
    let products = response
        .products
        .into_iter()
        .map(ProductJson::try_from)
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::malformed_response(INVENTORY_SERVICE, e))?;
    Ok(Json(ProductListJson { products }))
}

/// `GET /api/v1/products/{sku}`.
#[tracing::instrument(skip_all)]
pub async fn get_product(
    State(state): State<AppState>,
    sku: Result<Path<String>, PathRejection>,
) -> Result<Json<ProductJson>, ApiError> {
    let Path(sku) = sku?;
    // A malformed sku cannot be in the catalog; answer without a call.
    let sku = Sku::parse(&sku)?;
    let product = state
        .inventory
        .clone()
        .get_product(inventory::GetProductRequest { sku: sku.into() })
        .await
        .map_err(|status| ApiError::upstream(INVENTORY_SERVICE, &status))?
        .into_inner();
    let product = ProductJson::try_from(product)
        .map_err(|e| ApiError::malformed_response(INVENTORY_SERVICE, e))?;
    Ok(Json(product))
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
    let idempotency_key = validation::idempotency_key(&headers)?;
    let request = api::create_order_request(new_order, customer_id(), idempotency_key);
    let response = state
        .orders
        .clone()
        .create_order(request)
        .await
        .map_err(|status| ApiError::upstream(ORDER_SERVICE, &status))?
        .into_inner();

    let order = response.order.ok_or_else(|| {
        ApiError::malformed_response(ORDER_SERVICE, "the created order is missing")
    })?;
    let accepted = OrderAcceptedJson::try_from(&order)
        .map_err(|e| ApiError::malformed_response(ORDER_SERVICE, e))?;
    // The id is a parsed UUID, so the header value is always valid ASCII.
    let location = HeaderValue::try_from(format!("/api/v1/orders/{}", accepted.order_id))
        .map_err(|e| ApiError::malformed_response(ORDER_SERVICE, e))?;
    tracing::info!(order_id = %accepted.order_id, replayed = response.replayed, "order accepted");

    let mut headers = HeaderMap::new();
    headers.insert(LOCATION, location);
    if response.replayed {
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
        .clone()
        .get_order(order::GetOrderRequest {
            order_id: id.to_string(),
        })
        .await
        .map_err(|status| ApiError::upstream(ORDER_SERVICE, &status))?
        .into_inner();
    let order =
        OrderJson::try_from(order).map_err(|e| ApiError::malformed_response(ORDER_SERVICE, e))?;
    Ok(Json(order))
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
