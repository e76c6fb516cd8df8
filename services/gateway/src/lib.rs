//! The gateway: Shipshape's only public entry point. It serves the HTTP/JSON
//! API, checks what clients send, and forwards each request over gRPC to the
//! order or inventory service. It keeps no state of its own, so any number of
//! replicas can run side by side.
#![forbid(unsafe_code)]

pub mod api;
pub mod error;
pub mod routes;
pub mod upstream;
pub mod validation;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use shipshape_proto::inventory::inventory_service_client::InventoryServiceClient;
use shipshape_proto::order::order_service_client::OrderServiceClient;
use shipshape_runtime::{CancellationToken, Readiness, config};
use tonic::transport::Channel;

/// Largest request body accepted. A maximal order (50 items plus an address)
/// is a few kilobytes; anything far beyond that is a mistake or an attack
/// and is refused before it is buffered.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Settings read from the environment; see [`Config::from_env`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the public API listens (`HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Where `/healthz` and `/readyz` listen (`OPS_ADDR`).
    pub ops_addr: SocketAddr,
    /// The order service's gRPC URL (`ORDER_URL`).
    pub order_url: String,
    /// The inventory service's gRPC URL (`INVENTORY_URL`).
    pub inventory_url: String,
    /// Upper bound on each upstream call (`UPSTREAM_TIMEOUT_MS`).
    pub upstream_timeout: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            http_addr: config::addr_or("HTTP_ADDR", "0.0.0.0:8080")?,
            ops_addr: config::addr_or("OPS_ADDR", "0.0.0.0:9100")?,
            order_url: config::string_or("ORDER_URL", "http://127.0.0.1:50051")?,
            inventory_url: config::string_or("INVENTORY_URL", "http://127.0.0.1:50052")?,
            upstream_timeout: config::millis_or("UPSTREAM_TIMEOUT_MS", 3000)?,
        })
    }
}

/// What every handler shares: one client per upstream. Tonic clients are
/// cheap handles onto a multiplexed channel; handlers clone them per call.
#[derive(Clone)]
pub struct AppState {
    pub orders: OrderServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
}

impl AppState {
    /// Clients for the configured upstreams. Nothing connects yet: channels
    /// connect on first use, so the gateway can start before its upstreams.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            orders: OrderServiceClient::new(upstream::channel(
                &config.order_url,
                config.upstream_timeout,
            )?),
            inventory: InventoryServiceClient::new(upstream::channel(
                &config.inventory_url,
                config.upstream_timeout,
            )?),
        })
    }
}

/// The public API. Tests call it directly, without a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/products", get(routes::list_products))
        .route("/api/v1/products/{sku}", get(routes::get_product))
        .route("/api/v1/orders", post(routes::create_order))
        .route("/api/v1/orders/{id}", get(routes::get_order))
        // Applies to the routes above, so it must come after them.
        .method_not_allowed_fallback(routes::method_not_allowed)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Readiness: both upstreams accept connections.
fn readiness(config: &Config) -> anyhow::Result<Readiness> {
    let (order_host, order_port) = upstream::host_port(&config.order_url)?;
    let (inventory_host, inventory_port) = upstream::host_port(&config.inventory_url)?;
    Ok(Readiness::new()
        .with_check("order", upstream::reachable(order_host, order_port))
        .with_check(
            "inventory",
            upstream::reachable(inventory_host, inventory_port),
        ))
}

/// Serves the API and the ops server until `shutdown` is cancelled, then
/// lets in-flight requests finish.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let state = AppState::from_config(&config)?;
    let readiness = readiness(&config)?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP_ADDR {}", config.http_addr))?;
    tracing::info!(
        addr = %config.http_addr,
        order_url = %config.order_url,
        inventory_url = %config.inventory_url,
        "gateway listening"
    );

    let ops = shipshape_runtime::ops::serve(config.ops_addr, readiness, shutdown.clone());
    let api = async {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("serving the API")
    };
    // If either server fails, `try_join!` drops the other and the process
    // exits, rather than run half a gateway that probes report as healthy.
    tokio::try_join!(api, ops)?;
    Ok(())
}
