//! The stale-catalog fallback. The gateway remembers the last good catalog
//! and the last good answer for each product; when inventory cannot answer
//! (it is down, slow, shedding load, or the resilience layer refuses to call
//! it), the remembered answer is served with `200`, marked
//! `Catalog-Stale: true` and with `Age` in seconds. Browsing keeps working
//! through an inventory outage, and nothing is lost by it: prices and stock
//! are checked again when an order is placed.
//!
//! Only availability failures are masked. An answer that says something
//! about the request, such as "no such product", is passed on, and the
//! product is forgotten. Without a remembered answer the failure stands.
//!
//! Memory is bounded by the catalog: only products inventory has returned are
//! remembered, and each new catalog replaces what was remembered before.
//! There is no maximum age, since a stale answer is marked as such and its
//! `Age` lets clients decide.
//!
//! Time is a parameter, so the rules are tested without a clock or a server.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::http::header::AGE;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shipshape_proto::inventory;
use shipshape_types::Sku;
use tokio::time::Instant;

use crate::api::{ProductJson, ProductListJson};
use crate::error::{self, ApiError};
use crate::http_metrics;

/// Set on an answer served from memory because inventory could not answer.
pub const CATALOG_STALE: HeaderName = HeaderName::from_static("catalog-stale");

const INVENTORY_SERVICE: &str = "inventory";
const LIST_ROUTE: &str = "/api/v1/products";
const PRODUCT_ROUTE: &str = "/api/v1/products/{sku}";

/// The last good answers of inventory's catalog calls.
#[derive(Debug, Default)]
pub struct CatalogCache {
    remembered: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    catalog: Option<Fetched<Vec<inventory::Product>>>,
    /// By sku: the products of the last catalog, and those fetched one by
    /// one since.
    products: HashMap<String, Fetched<inventory::Product>>,
}

#[derive(Clone, Debug)]
struct Fetched<T> {
    value: T,
    at: Instant,
}

/// A catalog answer: fresh from inventory, or remembered and how old.
#[derive(Debug)]
pub struct CatalogAnswer<T> {
    body: T,
    /// `None` when fresh.
    age: Option<Duration>,
}

impl<T> CatalogAnswer<T> {
    /// The answer, and its age when it is the last good one rather than
    /// fresh.
    pub fn into_parts(self) -> (T, Option<Duration>) {
        (self.body, self.age)
    }
}

impl<T: Serialize> IntoResponse for CatalogAnswer<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.body).into_response();
        if let Some(age) = self.age {
            let headers = response.headers_mut();
            headers.insert(CATALOG_STALE, HeaderValue::from_static("true"));
            headers.insert(AGE, HeaderValue::from(age.as_secs()));
        }
        response
    }
}

/// Makes the stale-answer counter of both catalog routes exist at 0.
pub fn register_counters() {
    for route in [LIST_ROUTE, PRODUCT_ROUTE] {
        metrics::counter!(http_metrics::CATALOG_STALE, "route" => route).increment(0);
    }
}

impl CatalogCache {
    /// The answer to `GET /api/v1/products` at `now`, given what inventory's
    /// `ListProducts` returned.
    pub fn list_products(
        &self,
        upstream: Result<Vec<inventory::Product>, tonic::Status>,
        now: Instant,
    ) -> Result<CatalogAnswer<ProductListJson>, ApiError> {
        match upstream {
            Ok(products) => {
                // Checked before it is remembered: an answer that breaks the
                // contract is no good to serve later either.
                let json = list_json(products.clone())?;
                self.lock().remember_catalog(products, now);
                Ok(CatalogAnswer {
                    body: json,
                    age: None,
                })
            }
            Err(status) if error::is_unavailable(&status) => {
                let remembered = self.lock().catalog.clone();
                let Some(catalog) = remembered else {
                    return Err(ApiError::upstream(INVENTORY_SERVICE, &status));
                };
                let age = stale(LIST_ROUTE, &status, catalog.at, now);
                Ok(CatalogAnswer {
                    body: list_json(catalog.value)?,
                    age: Some(age),
                })
            }
            Err(status) => Err(ApiError::upstream(INVENTORY_SERVICE, &status)),
        }
    }

    /// The answer to `GET /api/v1/products/{sku}` at `now`, given what
    /// inventory's `GetProduct` returned.
    pub fn product(
        &self,
        sku: &Sku,
        upstream: Result<inventory::Product, tonic::Status>,
        now: Instant,
    ) -> Result<CatalogAnswer<ProductJson>, ApiError> {
        match upstream {
            Ok(product) => {
                let json = product_json(product.clone())?;
                self.lock().products.insert(
                    sku.as_str().to_owned(),
                    Fetched {
                        value: product,
                        at: now,
                    },
                );
                Ok(CatalogAnswer {
                    body: json,
                    age: None,
                })
            }
            Err(status) if error::is_unavailable(&status) => {
                let remembered = self.lock().products.get(sku.as_str()).cloned();
                let Some(product) = remembered else {
                    return Err(ApiError::upstream(INVENTORY_SERVICE, &status));
                };
                let age = stale(PRODUCT_ROUTE, &status, product.at, now);
                Ok(CatalogAnswer {
                    body: product_json(product.value)?,
                    age: Some(age),
                })
            }
            Err(status) => {
                if status.code() == tonic::Code::NotFound {
                    // Gone from the catalog: never serve it again.
                    self.lock().products.remove(sku.as_str());
                }
                Err(ApiError::upstream(INVENTORY_SERVICE, &status))
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Remembered> {
        // Every update is a single insert or replace, so a panic elsewhere
        // cannot leave the data half-written; a poisoned lock is still sound.
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Remembered {
    /// A new catalog replaces the old one, and with it every remembered
    /// product: those missing from it no longer exist.
    fn remember_catalog(&mut self, products: Vec<inventory::Product>, now: Instant) {
        self.products = products
            .iter()
            .map(|product| {
                let fetched = Fetched {
                    value: product.clone(),
                    at: now,
                };
                (product.sku.clone(), fetched)
            })
            .collect();
        self.catalog = Some(Fetched {
            value: products,
            at: now,
        });
    }
}

/// Records that `route` is answered from memory, and how old the answer is.
fn stale(route: &'static str, status: &tonic::Status, fetched: Instant, now: Instant) -> Duration {
    let age = now.saturating_duration_since(fetched);
    metrics::counter!(http_metrics::CATALOG_STALE, "route" => route).increment(1);
    tracing::warn!(
        route,
        grpc_code = ?status.code(),
        grpc_message = status.message(),
        age_secs = age.as_secs(),
        "inventory is unavailable; serving the remembered answer"
    );
    age
}

fn product_json(product: inventory::Product) -> Result<ProductJson, ApiError> {
    ProductJson::try_from(product).map_err(|e| ApiError::malformed_response(INVENTORY_SERVICE, e))
}

fn list_json(products: Vec<inventory::Product>) -> Result<ProductListJson, ApiError> {
    let products = products
        .into_iter()
        .map(product_json)
        .collect::<Result<_, _>>()?;
    Ok(ProductListJson { products })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::http::header::RETRY_AFTER;
    use shipshape_proto::common;
    use tonic::metadata::MetadataValue;
    use tonic::{Code, Status};

    use super::*;

    fn product(sku: &str, available: i64) -> inventory::Product {
        inventory::Product {
            sku: sku.into(),
            name: "Teapot".into(),
            description: "Short and stout".into(),
            price: Some(common::Money {
                amount_minor: 1999,
                currency: "EUR".into(),
            }),
            available,
        }
    }

    fn sku(s: &str) -> Sku {
        Sku::parse(s).expect("valid sku")
    }

    fn unavailable() -> Status {
        Status::unavailable("connection refused")
    }

    /// Status, headers and JSON body of an answer.
    async fn respond<T: Serialize>(
        answer: Result<CatalogAnswer<T>, ApiError>,
    ) -> (Response, serde_json::Value) {
        let response = match answer {
            Ok(answer) => answer.into_response(),
            Err(error) => error.into_response(),
        };
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        let json = serde_json::from_slice(&bytes).expect("json");
        (Response::from_parts(parts, axum::body::Body::empty()), json)
    }

    fn is_fresh(response: &Response) -> bool {
        response.headers().get(CATALOG_STALE).is_none() && response.headers().get(AGE).is_none()
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_catalog_is_served_as_is_and_remembered() {
        let cache = CatalogCache::default();
        let fetched = Instant::now();
        let (response, fresh) =
            respond(cache.list_products(Ok(vec![product("SKU-0001", 7)]), fetched)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(is_fresh(&response));
        assert_eq!(fresh["products"][0]["available"], 7);

        tokio::time::advance(Duration::from_millis(42_900)).await;
        let (response, stale) =
            respond(cache.list_products(Err(unavailable()), Instant::now())).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CATALOG_STALE], "true");
        assert_eq!(response.headers()[AGE], "42");
        assert!(response.headers().get(RETRY_AFTER).is_none());
        assert_eq!(stale, fresh);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_answer_replaces_the_remembered_one() {
        let cache = CatalogCache::default();
        let now = Instant::now();
        let _ = cache.list_products(Ok(vec![product("SKU-0001", 7)]), now);
        tokio::time::advance(Duration::from_secs(30)).await;
        let (response, _) =
            respond(cache.list_products(Ok(vec![product("SKU-0001", 3)]), Instant::now())).await;
        assert!(is_fresh(&response));

        tokio::time::advance(Duration::from_secs(5)).await;
        let (response, stale) =
            respond(cache.list_products(Err(unavailable()), Instant::now())).await;
        assert_eq!(response.headers()[AGE], "5");
        assert_eq!(stale["products"][0]["available"], 3);
    }

    #[tokio::test(start_paused = true)]
    async fn every_kind_of_unavailability_falls_back() {
        let with_code = |code: Code, error_code: &'static str| {
            let mut status = Status::new(code, "refused");
            status
                .metadata_mut()
                .insert("x-error-code", MetadataValue::from_static(error_code));
            status
        };
        let failures = [
            unavailable(),
            Status::deadline_exceeded("too slow"),
            Status::resource_exhausted("shedding"),
            Status::cancelled("Timeout expired"),
            with_code(Code::Unavailable, "circuit_open"),
            with_code(Code::Unknown, "bulkhead_full"),
            with_code(Code::Internal, "timeout"),
        ];
        let cache = CatalogCache::default();
        let now = Instant::now();
        let _ = cache.list_products(Ok(vec![product("SKU-0001", 7)]), now);
        for failure in failures {
            let description = format!("{failure:?}");
            let (response, _) = respond(cache.list_products(Err(failure), now)).await;
            assert_eq!(response.status(), StatusCode::OK, "{description}");
            assert_eq!(response.headers()[CATALOG_STALE], "true", "{description}");
            assert_eq!(response.headers()[AGE], "0", "{description}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_are_not_masked() {
        let cache = CatalogCache::default();
        let now = Instant::now();
        let _ = cache.list_products(Ok(vec![product("SKU-0001", 7)]), now);
        let (response, json) =
            respond(cache.list_products(Err(Status::internal("bug")), now)).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(json["error"]["code"], "upstream_error");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_remembered_answer_unavailable_is_503() {
        let cache = CatalogCache::default();
        let now = Instant::now();
        let (response, json) = respond(cache.list_products(Err(unavailable()), now)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(json["error"]["code"], "service_unavailable");

        let (response, _) = respond(cache.product(&sku("SKU-0001"), Err(unavailable()), now)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_product_is_remembered_on_its_own_and_from_the_catalog() {
        let cache = CatalogCache::default();
        let _ = cache.list_products(
            Ok(vec![product("SKU-0001", 7), product("SKU-0002", 1)]),
            Instant::now(),
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let (response, _) =
            respond(cache.product(&sku("SKU-0002"), Ok(product("SKU-0002", 0)), Instant::now()))
                .await;
        assert!(is_fresh(&response));

        tokio::time::advance(Duration::from_secs(3)).await;
        let now = Instant::now();
        // From the catalog, as old as the catalog.
        let (response, json) =
            respond(cache.product(&sku("SKU-0001"), Err(unavailable()), now)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[AGE], "13");
        assert_eq!(json["available"], 7);
        // Fetched on its own later: that answer, and its age.
        let (response, json) =
            respond(cache.product(&sku("SKU-0002"), Err(unavailable()), now)).await;
        assert_eq!(response.headers()[CATALOG_STALE], "true");
        assert_eq!(response.headers()[AGE], "3");
        assert_eq!(json["available"], 0);
        // Never seen.
        let (response, _) = respond(cache.product(&sku("SKU-0003"), Err(unavailable()), now)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_is_never_masked_and_forgets_the_product() {
        let cache = CatalogCache::default();
        let now = Instant::now();
        let _ = cache.list_products(Ok(vec![product("SKU-0001", 7)]), now);
        let (response, json) = respond(cache.product(
            &sku("SKU-0001"),
            Err(Status::not_found("no such product")),
            now,
        ))
        .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(json["error"]["code"], "not_found");

        let (response, _) = respond(cache.product(&sku("SKU-0001"), Err(unavailable()), now)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_catalog_forgets_products_no_longer_in_it() {
        let cache = CatalogCache::default();
        let now = Instant::now();
        let _ = cache.list_products(
            Ok(vec![product("SKU-0001", 7), product("SKU-0002", 1)]),
            now,
        );
        let _ = cache.list_products(Ok(vec![product("SKU-0001", 7)]), now);
        let (response, _) = respond(cache.product(&sku("SKU-0002"), Err(unavailable()), now)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(cache.lock().products.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_answer_is_not_remembered() {
        let cache = CatalogCache::default();
        let now = Instant::now();
        let _ = cache.list_products(Ok(vec![product("SKU-0001", 7)]), now);
        let unpriced = inventory::Product {
            price: None,
            ..product("SKU-0001", 0)
        };
        let (response, _) = respond(cache.list_products(Ok(vec![unpriced.clone()]), now)).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let (response, _) = respond(cache.product(&sku("SKU-0001"), Ok(unpriced), now)).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);

        // The last good answers still stand.
        let (_, json) = respond(cache.list_products(Err(unavailable()), now)).await;
        assert_eq!(json["products"][0]["available"], 7);
        let (_, json) = respond(cache.product(&sku("SKU-0001"), Err(unavailable()), now)).await;
        assert_eq!(json["available"], 7);
    }
}
