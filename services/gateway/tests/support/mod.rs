//! What the gateway's tests share: the token settings their gateway
//! checks, and tokens it accepts.
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use shipshape_auth::{Algorithm, Minter, VerificationKey, VerifierConfig};
use shipshape_gateway::request_body::BodyLimits;
use shipshape_gateway::serve::ConnectionLimits;
use shipshape_gateway::{AppState, Config, MAX_BODY_BYTES, router};
use shipshape_resilience::ResilienceConfig;

/// Port 1 (tcpmux) is privileged and unused, so a connection is refused at
/// once instead of timing out.
pub const NOTHING_LISTENS: &str = "http://127.0.0.1:1";

/// The defaults `Config::from_env` uses, with both upstreams at `upstream`
/// and the tests' token settings.
pub fn config(upstream: &str) -> Config {
    Config {
        http_addr: ([127, 0, 0, 1], 0).into(),
        ops_addr: ([127, 0, 0, 1], 0).into(),
        order_url: upstream.into(),
        inventory_url: upstream.into(),
        grpc_tls: None,
        order: ResilienceConfig::default(),
        inventory: ResilienceConfig::default(),
        rate_limit_enabled: true,
        rate_limit_per_second: NonZeroU32::new(100).expect("non-zero"),
        rate_limit_burst: NonZeroU32::new(200).expect("non-zero"),
        load_shed_enabled: true,
        max_in_flight: NonZeroUsize::new(256).expect("non-zero"),
        max_in_flight_per_client: NonZeroUsize::new(64).expect("non-zero"),
        body: BodyLimits {
            max_bytes: MAX_BODY_BYTES,
            timeout: Duration::from_secs(10),
            min_bytes_per_sec: 1024,
        },
        connections: ConnectionLimits {
            max_connections: NonZeroUsize::new(10_000).expect("non-zero"),
            max_per_address: NonZeroUsize::new(128).expect("non-zero"),
            header_timeout: Duration::from_secs(10),
        },
        auth: auth(),
        trust_client_trace_context: false,
        trusted_proxies: Default::default(),
        web: Default::default(),
    }
}

/// The gateway's router for `config`, called without a socket.
pub fn app_with(config: &Config) -> axum::Router {
    router(AppState::from_config(config).expect("state"), config).expect("router")
}

const SECRET: &str = "the-gateway-tests-secret-of-32-bytes-or-more";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "shipshape";

/// The customer most tests act as.
pub const CUSTOMER: &str = "alice";

/// HS256 with the tests' secret, issuer and audience.
pub fn auth() -> VerifierConfig {
    VerifierConfig {
        algorithm: Algorithm::Hs256,
        key: VerificationKey::Secret(SECRET.as_bytes().to_vec()),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway: Duration::from_secs(30),
        max_lifetime: shipshape_auth::DEFAULT_MAX_LIFETIME,
    }
}

/// An `Authorization` value for `subject` with `scopes`.
pub fn bearer(subject: &str, scopes: &[&str]) -> String {
    let token = Minter::hs256(SECRET.as_bytes(), ISSUER, AUDIENCE)
        .expect("minter")
        .mint(subject, scopes, Duration::from_secs(300))
        .expect("token");
    format!("Bearer {token}")
}

/// The same, signed with another secret: a forgery.
pub fn forged_bearer(subject: &str) -> String {
    let token = Minter::hs256(
        b"not-the-gateway-secret-but-32-bytes-long",
        ISSUER,
        AUDIENCE,
    )
    .expect("minter")
    .mint(subject, &[], Duration::from_secs(300))
    .expect("token");
    format!("Bearer {token}")
}
