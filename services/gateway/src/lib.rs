//! The gateway: Shipshape's only public entry point. It serves the HTTP/JSON
//! API, checks what clients send, and forwards each request over gRPC to the
//! order or inventory service. It keeps no state of its own, so any number of
//! replicas can run side by side; what it remembers (client request rates,
//! the last good catalog) is a per-replica aid, never a source of truth.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod catalog_cache;
pub mod client;
pub mod error;
pub mod forwarded;
pub mod host;
pub mod http_metrics;
pub mod load_shed;
pub mod openapi;
pub mod rate_limit;
pub mod request_body;
pub mod routes;
pub mod serve;
mod state;
pub mod upstream;
pub mod validation;
pub mod web;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post, put};
use shipshape_auth::{Verifier, VerifierConfig};
use shipshape_resilience::{Downstream, ResilienceConfig};
use shipshape_runtime::grpc_tls::TlsFiles;
use shipshape_runtime::{CancellationToken, Readiness, config};
use shipshape_telemetry::http;

use crate::forwarded::TrustedProxies;
use crate::load_shed::LoadShedder;
use crate::rate_limit::RateLimiter;
use crate::request_body::BodyLimits;
use crate::serve::ConnectionLimits;
use crate::state::ApiState;
use crate::upstream::{Inventory, Orders};

pub use crate::state::AppState;

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
    /// The order service's gRPC URL (`ORDER_URL`), or a comma-separated list
    /// of its replicas' URLs (`http://10.0.0.5:50051,http://10.0.0.6:50051`),
    /// over which calls are balanced; see [`upstream::channel`].
    pub order_url: String,
    /// The inventory service's gRPC URL (`INVENTORY_URL`), or a
    /// comma-separated list of its replicas' URLs, as for `order_url`.
    pub inventory_url: String,
    /// The certificate the gateway presents to the order and inventory
    /// services and the CA it trusts for theirs (`GRPC_TLS_CERT`,
    /// `GRPC_TLS_KEY`, `GRPC_TLS_CA`; see `shipshape_runtime::grpc_tls`).
    /// With them, `ORDER_URL` and `INVENTORY_URL` are `https://`.
    pub grpc_tls: Option<TlsFiles>,
    /// The resilience stack around calls to the order service, from
    /// `ORDER_*`: `ORDER_TIMEOUT_MS` per attempt (default 3000), and
    /// `ORDER_RETRY_*`, `ORDER_BREAKER_*`, `ORDER_BULKHEAD_*` and
    /// `ORDER_{TIMEOUT,RETRY,BREAKER,BULKHEAD}_ENABLED` (see
    /// `shipshape_resilience`).
    pub order: ResilienceConfig,
    /// The same for the inventory service, from `INVENTORY_*`
    /// (`INVENTORY_TIMEOUT_MS`, `INVENTORY_BREAKER_OPEN_MS`, ...).
    pub inventory: ResilienceConfig,
    /// Whether each client's request rate is limited (`RATE_LIMIT_ENABLED`,
    /// `true` or `false`; default true). See [`rate_limit`].
    pub rate_limit_enabled: bool,
    /// Requests per second one client may sustain (`RATE_LIMIT_PER_SECOND`,
    /// default 100).
    pub rate_limit_per_second: NonZeroU32,
    /// Requests one client may send at once after a quiet spell
    /// (`RATE_LIMIT_BURST`, default 200).
    pub rate_limit_burst: NonZeroU32,
    /// Whether requests beyond `max_in_flight` are refused
    /// (`LOAD_SHED_ENABLED`, `true` or `false`; default true). See
    /// [`load_shed`].
    pub load_shed_enabled: bool,
    /// Requests the API works on at once, across all clients, before it
    /// sheds load (`MAX_IN_FLIGHT`, default 256).
    pub max_in_flight: NonZeroUsize,
    /// Of those, the most one client may have (`MAX_IN_FLIGHT_PER_CLIENT`,
    /// default 64: no client takes more than a quarter of the places).
    pub max_in_flight_per_client: NonZeroUsize,
    /// How fast request bodies must arrive: within `HTTP_BODY_TIMEOUT_MS`
    /// (default 10000) and, after the first second, at
    /// `HTTP_BODY_MIN_BYTES_PER_SEC` or faster (default 1024). See
    /// [`request_body`].
    pub body: BodyLimits,
    /// Connections open at once (`HTTP_MAX_CONNECTIONS`, default 10000) and
    /// from one address (`HTTP_MAX_CONNECTIONS_PER_ADDRESS`, default 128:
    /// 78 addresses to fill the gateway rather than 16),
    /// and the time to send a request head, which also closes idle
    /// keep-alive connections (`HTTP_HEADER_TIMEOUT_MS`, default 10000).
    /// See [`serve`].
    pub connections: ConnectionLimits,
    /// The proxies in front of the gateway whose `X-Forwarded-For` names
    /// the client (`TRUSTED_PROXIES`: addresses and blocks such as
    /// `10.0.0.0/8`, comma separated; default none). See [`forwarded`].
    pub trusted_proxies: TrustedProxies,
    /// How callers' bearer tokens are checked (`JWT_*`; see
    /// [`VerifierConfig::from_env`]). Required: without it no one could be
    /// authenticated.
    pub auth: VerifierConfig,
    /// Whether a request's `traceparent` is continued
    /// (`TRUST_CLIENT_TRACE_CONTEXT`, default false: each request starts a
    /// trace of its own and links the client's). Set it only behind an edge
    /// that starts traces itself and strips clients' trace headers.
    pub trust_client_trace_context: bool,
    /// The web shop's settings (`DEMO_SIGN_IN`, `JAEGER_UI_URL`,
    /// `SESSION_COOKIE_SECURE`; see [`web::WebConfig::from_env`]).
    pub web: web::WebConfig,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        const RATE_LIMIT_PER_SECOND: NonZeroU32 = NonZeroU32::new(100).expect("non-zero");
        const RATE_LIMIT_BURST: NonZeroU32 = NonZeroU32::new(200).expect("non-zero");
        const MAX_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(256).expect("non-zero");
        const MAX_IN_FLIGHT_PER_CLIENT: NonZeroUsize = NonZeroUsize::new(64).expect("non-zero");
        const MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero");
        const MAX_CONNECTIONS_PER_ADDRESS: NonZeroUsize = NonZeroUsize::new(128).expect("non-zero");
        Ok(Self {
            http_addr: config::addr_or("HTTP_ADDR", "0.0.0.0:8080")?,
            ops_addr: config::addr_or("OPS_ADDR", "0.0.0.0:9100")?,
            order_url: config::string_or("ORDER_URL", "http://127.0.0.1:50051")?,
            inventory_url: config::string_or("INVENTORY_URL", "http://127.0.0.1:50052")?,
            grpc_tls: TlsFiles::from_env()?,
            order: ResilienceConfig::from_env("ORDER")?,
            inventory: ResilienceConfig::from_env("INVENTORY")?,
            rate_limit_enabled: config::var_or("RATE_LIMIT_ENABLED", true)?,
            rate_limit_per_second: config::var_or("RATE_LIMIT_PER_SECOND", RATE_LIMIT_PER_SECOND)?,
            rate_limit_burst: config::var_or("RATE_LIMIT_BURST", RATE_LIMIT_BURST)?,
            load_shed_enabled: config::var_or("LOAD_SHED_ENABLED", true)?,
            max_in_flight: config::var_or("MAX_IN_FLIGHT", MAX_IN_FLIGHT)?,
            max_in_flight_per_client: config::var_or(
                "MAX_IN_FLIGHT_PER_CLIENT",
                MAX_IN_FLIGHT_PER_CLIENT,
            )?,
            body: BodyLimits {
                max_bytes: MAX_BODY_BYTES,
                timeout: config::millis_or("HTTP_BODY_TIMEOUT_MS", 10_000)?,
                min_bytes_per_sec: config::var_or("HTTP_BODY_MIN_BYTES_PER_SEC", 1024)?,
            },
            connections: ConnectionLimits {
                max_connections: config::var_or("HTTP_MAX_CONNECTIONS", MAX_CONNECTIONS)?,
                max_per_address: config::var_or(
                    "HTTP_MAX_CONNECTIONS_PER_ADDRESS",
                    MAX_CONNECTIONS_PER_ADDRESS,
                )?,
                header_timeout: config::millis_or("HTTP_HEADER_TIMEOUT_MS", 10_000)?,
            },
            auth: VerifierConfig::from_env()?,
            trust_client_trace_context: config::var_or("TRUST_CLIENT_TRACE_CONTEXT", false)?,
            trusted_proxies: config::var_or("TRUSTED_PROXIES", TrustedProxies::default())?,
            web: web::WebConfig::from_env()?,
        })
    }
}

impl AppState {
    /// Clients for the configured upstreams, each with its own breaker,
    /// bulkhead and retry budget (so a failing inventory cannot take order
    /// calls down with it). Nothing connects yet: channels connect on first
    /// use, so the gateway can start before its upstreams.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let orders = Downstream::new(upstream::ORDER, config.order.clone());
        let inventory = Downstream::new(upstream::INVENTORY, config.inventory.clone());
        let tls = config.grpc_tls.as_ref();
        Ok(Self {
            orders: Orders::new(
                upstream::channel("ORDER_URL", &config.order_url, upstream::ORDER, tls)?,
                &orders,
            ),
            inventory: Inventory::new(
                upstream::channel(
                    "INVENTORY_URL",
                    &config.inventory_url,
                    upstream::INVENTORY,
                    tls,
                )?,
                &inventory,
            ),
            streams: CancellationToken::new(),
            web: web::WebState::new(&config.web, &config.auth)?,
        })
    }
}

/// The public API, with the edge limits `config` turns on. Tests call it
/// directly, without a socket. Its rate limiter and catalog memory live as
/// long as the router, so build it once and clone it.
///
/// Rate limiting needs the client's address for anonymous requests: serve
/// the router with [`serve::serve`], as [`run`] does, which gives every
/// request its `ConnectInfo<SocketAddr>`. Without it every anonymous client
/// shares one bucket.
pub fn router(state: AppState, config: &Config) -> anyhow::Result<Router> {
    let verifier = Arc::new(Verifier::new(&config.auth).context("the JWT settings")?);
    let state = ApiState {
        upstream: state,
        catalog: Arc::default(),
    };
    let router = Router::new()
        .route("/api/v1/products", get(routes::list_products))
        .route("/api/v1/products/{sku}", get(routes::get_product))
        .route(
            "/api/v1/orders",
            post(routes::create_order).get(routes::list_orders),
        )
        .route("/api/v1/orders/{id}", get(routes::get_order))
        .route(
            "/api/v1/orders/{id}/timeline",
            get(routes::get_order_timeline),
        )
        .route(
            "/api/v1/orders/{id}/timeline/stream",
            get(routes::stream_order_timeline),
        )
        .route(
            "/api/v1/admin/order-timelines/rebuild",
            post(routes::rebuild_order_timelines),
        )
        .route("/api/v1/demo/sign-in/{customer}", post(web::demo_sign_in))
        .route("/api/v1/sign-out", post(web::sign_out))
        .route("/api/v1/admin/operations", get(web::admin_operations))
        .route(
            "/api/v1/admin/psp/faults",
            get(web::psp_faults).put(web::set_psp_faults),
        )
        .route(
            "/api/v1/admin/products/{sku}/stock",
            put(routes::restock_product),
        )
        // Public: the API's OpenAPI document. Every route above must be in
        // it (`openapi::ApiDoc`); tests/openapi.rs checks that.
        .route(openapi::PATH, get(openapi::serve))
        // The web shop's pages, and its session and demo sign-in.
        .merge(web::routes());
    let mut router = router
        // Applies to the routes above, so it must come after them.
        .method_not_allowed_fallback(routes::method_not_allowed)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    // Each layer wraps the ones added before it, so a request meets them in
    // reverse: tracing and metrics first, the token check,
    // the rate limit (keyed on the customer the token names, or the
    // address), the refusal of bad tokens (after the limit, so forged
    // tokens cannot flood), reading the body against its deadline, and only
    // then load shedding: a request takes a place in flight once its body
    // is in, so slow senders hold none.
    if config.load_shed_enabled {
        let shedder = LoadShedder::new(config.max_in_flight, config.max_in_flight_per_client);
        router = router.layer(from_fn_with_state(shedder, load_shed::shed));
    }
    router = router
        .layer(from_fn_with_state(config.body, request_body::read_body))
        .layer(from_fn(auth::refuse_bad_tokens));
    if config.rate_limit_enabled {
        let limiter = RateLimiter::new(
            config.rate_limit_per_second,
            config.rate_limit_burst,
            rate_limit::MAX_CLIENTS,
        );
        router = router.layer(from_fn_with_state(Arc::new(limiter), rate_limit::limit));
    }
    router = router.layer(from_fn_with_state(verifier, auth::authenticate));
    // Outermost, so refusals by the layers above are counted, timed and
    // traced too.
    let router = router.layer(from_fn(http_metrics::record));
    let caller = if config.trust_client_trace_context {
        http::Caller::Trusted
    } else {
        http::Caller::Untrusted
    };
    Ok(http::traced(router, caller))
}

/// Readiness: the gateway is ready once it serves, whatever its upstreams
/// do. It answers without them (the last catalog, or `503` with
/// `Retry-After`), and an unready gateway would leave its Service without
/// endpoints, so clients would get refused connections instead. Whether
/// some replica of each upstream accepts connections is reported beside it.
fn readiness(config: &Config) -> anyhow::Result<Readiness> {
    let order = upstream::replicas(&config.order_url)?;
    let inventory = upstream::replicas(&config.inventory_url)?;
    Ok(Readiness::new()
        .with_report("order", upstream::reachable(order))
        .with_report("inventory", upstream::reachable(inventory)))
}

/// Serves the API and the ops server until `shutdown` is cancelled, then
/// lets in-flight requests finish.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    http_metrics::describe();
    catalog_cache::register_counters();
    let state = AppState {
        streams: shutdown.clone(),
        ..AppState::from_config(&config)?
    };
    let readiness = readiness(&config)?;
    let listener = serve::bind(config.http_addr).await?;
    tracing::info!(
        addr = %config.http_addr,
        order_url = %config.order_url,
        inventory_url = %config.inventory_url,
        order_timeout_ms = config.order.timeout.duration.as_millis(),
        inventory_timeout_ms = config.inventory.timeout.duration.as_millis(),
        rate_limit_enabled = config.rate_limit_enabled,
        rate_limit_per_second = config.rate_limit_per_second,
        rate_limit_burst = config.rate_limit_burst,
        load_shed_enabled = config.load_shed_enabled,
        trusted_proxies = %config.trusted_proxies,
        max_in_flight = config.max_in_flight,
        max_in_flight_per_client = config.max_in_flight_per_client,
        body_timeout_ms = config.body.timeout.as_millis(),
        body_min_bytes_per_sec = config.body.min_bytes_per_sec,
        max_connections = config.connections.max_connections,
        max_connections_per_address = config.connections.max_per_address,
        header_timeout_ms = config.connections.header_timeout.as_millis(),
        jwt_algorithm = ?config.auth.algorithm,
        jwt_issuer = %config.auth.issuer,
        "gateway listening"
    );

    let ops = shipshape_runtime::ops::serve(config.ops_addr, readiness, shutdown.clone());
    let app = router(state, &config)?;
    let api = serve::serve(
        listener,
        app,
        config.connections,
        config.trusted_proxies.clone(),
        shutdown.clone(),
    );
    // If either server fails, `try_join!` drops the other and the process
    // exits, rather than run half a gateway that probes report as healthy.
    tokio::try_join!(api, ops)?;
    Ok(())
}
