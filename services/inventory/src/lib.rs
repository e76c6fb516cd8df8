//! The inventory service: owns the catalog, prices and stock. Serves the
//! catalog over gRPC and, in the checkout saga, reserves all of an order's
//! lines or none, releases them on any compensation and marks them sold when
//! the order is confirmed.
#![forbid(unsafe_code)]

pub mod domain;
pub mod events;
pub mod grpc;
pub mod store;

use std::net::SocketAddr;

use shipshape_messaging::ServiceSpec;
use shipshape_proto::inventory::inventory_service_server::InventoryServiceServer;
use shipshape_proto::{GATEWAY, INVENTORY_ROLE, ORDER_ROLE, Role};
use shipshape_runtime::grpc_tls::CallerPolicy;
use shipshape_runtime::{Wiring, config};
use sqlx::migrate::Migrator;
use tonic::server::NamedService;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The inventory service, as `shipshape_messaging::service` runs it: it
/// serves the catalog over gRPC (with `grpc.health.v1` and reflection) and
/// handles saga events.
pub struct Spec;

/// The inventory service's own settings.
pub struct Config {
    /// `GRPC_ADDR` (default `127.0.0.1:50052`: only this machine; the
    /// chart and compose listen on every interface, behind their network
    /// policies).
    pub grpc_addr: SocketAddr,
}

impl ServiceSpec for Spec {
    const ROLE: Role = INVENTORY_ROLE;
    const DEFAULT_OPS_ADDR: &'static str = "0.0.0.0:9102";

    type Config = Config;
    type Handler = events::InventoryEvents;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn config_from_env() -> anyhow::Result<Config> {
        Ok(Config {
            grpc_addr: config::addr_or("GRPC_ADDR", "127.0.0.1:50052")?,
        })
    }

    async fn wire(config: Config, wiring: &mut Wiring) -> anyhow::Result<events::InventoryEvents> {
        let catalog = grpc::Catalog::new(wiring.pool().clone());
        let grpc_addr = wiring
            .serve_grpc(
                config.grpc_addr,
                InventoryServiceServer::new(catalog),
                callers(),
            )
            .await?;
        tracing::info!(grpc = %grpc_addr, ops = %wiring.ops_addr(), "inventory serving");
        Ok(events::InventoryEvents::new(wiring.pool().clone()))
    }
}

/// The gateway may call every method (the catalog, and restocking for its
/// admins); the order service only prices the lines of an order.
fn callers() -> CallerPolicy {
    let api = InventoryServiceServer::<grpc::Catalog>::NAME;
    CallerPolicy::new()
        .allow(&format!("/{api}/"), &[GATEWAY])
        .allow(&format!("/{api}/PriceSkus"), &[GATEWAY, ORDER_ROLE.service])
}
