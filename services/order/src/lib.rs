//! The order service: owns orders. Creates them (pricing through the
//! inventory service), follows the choreographed checkout saga from the other
//! services' events, and decides each order's outcome: CONFIRMED, or
//! CANCELLED once every compensation has been observed.
#![forbid(unsafe_code)]

pub mod deadline;
pub mod events;
pub mod grpc;
pub mod listing;
pub mod placement;
pub mod saga;
pub mod store;
pub mod timeline;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use shipshape_messaging::{KafkaSettings, ServiceSpec};
use shipshape_proto::inventory::inventory_service_client::InventoryServiceClient;
use shipshape_proto::order::order_service_server::OrderServiceServer;
use shipshape_proto::{GATEWAY, INVENTORY_ROLE, ORDER_ROLE, Role};
use shipshape_resilience::{Downstream, ResilienceConfig};
use shipshape_runtime::grpc_tls::{self, CallerPolicy};
use shipshape_runtime::{Wiring, config};
use sqlx::migrate::Migrator;
use tonic::server::NamedService;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The order service, as `shipshape_messaging::service` runs it: it
/// serves the order API over gRPC (with `grpc.health.v1` and reflection),
/// follows the saga and sweeps deadlines.
pub struct Spec;

/// The order service's own settings.
pub struct Config {
    /// `GRPC_ADDR` (default `127.0.0.1:50051`: only this machine; the
    /// chart and compose listen on every interface, behind their network
    /// policies).
    pub grpc_addr: SocketAddr,
    /// `INVENTORY_URL` (default `http://127.0.0.1:50052`): the inventory
    /// service's gRPC URL, or a comma-separated list of its replicas' URLs
    /// (`http://10.0.0.7:50052,http://10.0.0.8:50052`), over which pricing
    /// calls are balanced (see `shipshape_runtime::grpc_balance`).
    pub inventory_url: String,
    /// The resilience stack around pricing calls to inventory, from
    /// `INVENTORY_*`: `INVENTORY_TIMEOUT_MS` per attempt (default 500),
    /// `INVENTORY_RETRY_MAX_ATTEMPTS` (default 2), and the other
    /// `INVENTORY_RETRY_*`, `INVENTORY_BREAKER_*`, `INVENTORY_BULKHEAD_*`
    /// (see `shipshape_resilience`); see [`pricing_defaults`].
    pub inventory: ResilienceConfig,
    /// `SAGA_DEADLINE_MS`: a pending order is cancelled `timed_out` this long
    /// after it was placed (default 30000).
    pub saga_deadline: Duration,
    /// `SAGA_SWEEP_INTERVAL_MS`: how often overdue orders are looked for
    /// (default 1000).
    pub sweep_interval: Duration,
    /// The broker settings every service reads (`KAFKA_*`), with which a
    /// timeline rebuild reads the event topics.
    pub kafka: KafkaSettings,
}

/// Pricing runs inside the gateway's CreateOrder call (3 s per attempt by
/// default). Every attempt of it, backoff included, must fit well inside
/// that, or a hanging inventory would time out the gateway's call first and
/// count against the order service, which is healthy and could have said
/// "inventory unavailable": two attempts of 500 ms, for a read that takes
/// milliseconds.
pub fn pricing_defaults() -> ResilienceConfig {
    let mut defaults = ResilienceConfig::default();
    defaults.timeout.duration = Duration::from_millis(500);
    defaults.retry.max_attempts = 2;
    defaults
}

impl ServiceSpec for Spec {
    const ROLE: Role = ORDER_ROLE;
    const DEFAULT_OPS_ADDR: &'static str = "0.0.0.0:9101";

    type Config = Config;
    type Handler = events::OrderEvents;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn config_from_env() -> anyhow::Result<Config> {
        Ok(Config {
            grpc_addr: config::addr_or("GRPC_ADDR", "127.0.0.1:50051")?,
            inventory_url: config::string_or("INVENTORY_URL", "http://127.0.0.1:50052")?,
            inventory: ResilienceConfig::from_env_over("INVENTORY", pricing_defaults())?,
            saga_deadline: config::millis_or("SAGA_DEADLINE_MS", 30_000)?,
            sweep_interval: config::millis_or("SAGA_SWEEP_INTERVAL_MS", 1000)?,
            kafka: KafkaSettings::from_env(ORDER_ROLE.service)?,
        })
    }

    fn describe_metrics() {
        shipshape_resilience::describe();
        events::describe();
    }

    async fn wire(config: Config, wiring: &mut Wiring) -> anyhow::Result<events::OrderEvents> {
        // No call timeout on the channel: the stack's per-attempt timeout is
        // the one bound on a pricing call.
        let inventory = grpc_tls::channel(
            "INVENTORY_URL",
            &config.inventory_url,
            INVENTORY_ROLE.service,
            wiring.grpc_tls(),
            Duration::from_secs(1),
        )?;
        let news = watch::TimelineNews::default();
        wiring.add_task(
            "timeline listener",
            news.clone()
                .listen(wiring.pool().clone(), wiring.shutdown()),
        );
        let api = grpc::OrderApi::new(
            wiring.pool().clone(),
            InventoryServiceClient::new(shipshape_telemetry::grpc::traced(inventory)),
            &Downstream::new(grpc::INVENTORY, config.inventory),
            grpc::OrderApiSettings {
                deadline_secs: config.saga_deadline.as_secs_f64(),
                kafka: config.kafka,
                news: news.clone(),
                shutdown: wiring.shutdown(),
            },
        );
        let grpc_addr = wiring
            .serve_grpc(
                config.grpc_addr,
                OrderServiceServer::new(api),
                // Only the gateway places and reads orders, on its
                // customers' behalf.
                CallerPolicy::new().allow(
                    &format!("/{}/", OrderServiceServer::<grpc::OrderApi>::NAME),
                    &[GATEWAY],
                ),
            )
            .await?;
        tracing::info!(grpc = %grpc_addr, ops = %wiring.ops_addr(), "order serving");
        let sweeper = deadline::sweep(
            wiring.pool().clone(),
            config.sweep_interval,
            wiring.shutdown(),
        );
        wiring.add_task("deadline sweeper", sweeper);
        Ok(events::OrderEvents::new(wiring.pool().clone()))
    }
}
