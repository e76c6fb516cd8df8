//! The catalog over gRPC, and the operators' restock.

use shipshape_auth::{ADMIN_SCOPE, Identity};
use shipshape_proto::common;
use shipshape_proto::error_status;
use shipshape_proto::inventory::inventory_service_server::InventoryService;
use shipshape_proto::inventory::{
    GetProductRequest, ListProductsRequest, ListProductsResponse, PriceSkusRequest,
    PriceSkusResponse, Product, RestockProductRequest, SkuPrice,
};
use shipshape_types::{InvalidValue, Sku};
use sqlx::PgPool;
use tonic::{Code, Request, Response, Status};

use crate::domain::RestockQuantity;
use crate::store::{self, ProductRow};

pub struct Catalog {
    pool: PgPool,
}

impl Catalog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Everything the catalog API can fail with, mapped to gRPC once.
#[derive(Debug, thiserror::Error)]
enum CatalogError {
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error("unknown sku(s): {0}")]
    UnknownSkus(String),
    #[error("no product with sku {0}")]
    NotFound(Sku),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<CatalogError> for Status {
    fn from(error: CatalogError) -> Self {
        match &error {
            CatalogError::Invalid(invalid) => {
                error_status(Code::InvalidArgument, invalid.code, invalid.message.clone())
            }
            CatalogError::UnknownSkus(_) => {
                error_status(Code::InvalidArgument, "unknown_sku", error.to_string())
            }
            CatalogError::NotFound(_) => {
                error_status(Code::NotFound, "not_found", error.to_string())
            }
            CatalogError::Database(e) => shipshape_runtime::database::query_failed(e, "catalog"),
        }
    }
}

fn to_proto(row: ProductRow) -> Product {
    Product {
        sku: row.sku,
        name: row.name,
        description: row.description,
        price: Some(common::Money {
            amount_minor: row.price_minor,
            currency: row.currency,
        }),
        available: row.available,
    }
}

#[tonic::async_trait]
impl InventoryService for Catalog {
    async fn list_products(
        &self,
        _request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let rows = store::list_products(&self.pool)
            .await
            .map_err(CatalogError::from)?;
        Ok(Response::new(ListProductsResponse {
            products: rows.into_iter().map(to_proto).collect(),
        }))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let sku = Sku::parse(&request.into_inner().sku).map_err(CatalogError::from)?;
        match store::get_product(&self.pool, &sku)
            .await
            .map_err(CatalogError::from)?
        {
            Some(row) => Ok(Response::new(to_proto(row))),
            None => Err(CatalogError::NotFound(sku).into()),
        }
    }

    async fn restock_product(
        &self,
        request: Request<RestockProductRequest>,
    ) -> Result<Response<Product>, Status> {
        // Operators only: the gateway forwards the caller's scopes.
        let caller = Identity::from_metadata(request.metadata())?;
        if !caller.has_scope(ADMIN_SCOPE) {
            return Err(error_status(
                Code::PermissionDenied,
                "insufficient_scope",
                "restocking needs the admin scope",
            ));
        }
        let request = request.into_inner();
        let sku = Sku::parse(&request.sku).map_err(CatalogError::from)?;
        let units = RestockQuantity::new(request.quantity).map_err(CatalogError::from)?;
        match store::restock(&self.pool, &sku, units)
            .await
            .map_err(CatalogError::from)?
        {
            Some(row) => {
                tracing::info!(sku = %sku, added = units.get(), available = row.available, "restocked");
                Ok(Response::new(to_proto(row)))
            }
            None => Err(CatalogError::NotFound(sku).into()),
        }
    }

    async fn price_skus(
        &self,
        request: Request<PriceSkusRequest>,
    ) -> Result<Response<PriceSkusResponse>, Status> {
        let skus = request
            .into_inner()
            .skus
            .iter()
            .map(|s| Sku::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CatalogError::from)?;
        let prices = store::prices(&self.pool, &skus)
            .await
            .map_err(CatalogError::from)?;
        let missing: Vec<&str> = skus
            .iter()
            .filter(|s| !prices.contains_key(*s))
            .map(Sku::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(CatalogError::UnknownSkus(missing.join(", ")).into());
        }
        Ok(Response::new(PriceSkusResponse {
            prices: skus
                .into_iter()
                .map(|sku| SkuPrice {
                    unit_price: Some(prices[&sku].into()),
                    sku: sku.into(),
                })
                .collect(),
        }))
    }
}
