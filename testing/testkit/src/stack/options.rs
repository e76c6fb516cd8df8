//! How to start a stack: [`StackOptions`] and the choices it holds (ports,
//! links behind fault proxies, the broker, replicas), with the defaults for
//! tests, local runs and tools.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use shipshape_kafka::Connection;

use super::Service;
use crate::auth;

#[cfg(doc)]
use super::Stack;
#[cfg(doc)]
use crate::broker::SHARED_BROKER_VAR;

/// The prefix of every database a test stack creates; `cargo xtask test`
/// drops leftovers with it before a run.
pub const TEST_DATABASE_PREFIX: &str = "shipshape_t";

/// The environment variable naming the directory of the service binaries.
pub const BIN_DIR_VAR: &str = "SHIPSHAPE_BIN_DIR";

/// Which ports the stack listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ports {
    /// The documented ones: gateway 8080, gRPC 50051/50052, PSP 8090, ops
    /// 9100-9105, broker 9092 (its controller 9093). For `cargo xtask up`.
    Standard,
    /// Free ports chosen at start, so parallel tests never collide.
    Free,
}

/// A connection between parts of the stack that can be routed through a
/// fault-injection proxy, so a test can slow, cut or blackhole it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Link {
    /// Every client of the broker: the services and the tests. The broker
    /// advertises the proxy's address, so Kafka clients, which connect to
    /// the advertised address after bootstrapping, stay behind the proxy.
    Broker,
    /// The gateway's calls to the order service.
    GatewayToOrder,
    /// The gateway's calls to the inventory service.
    GatewayToInventory,
    /// The order service's calls to the inventory service.
    OrderToInventory,
    /// The payment service's calls to the PSP.
    PaymentToPsp,
    /// A service's connections to its own database (Postgres over TCP);
    /// tests and the invariant checker still connect directly.
    Database(Service),
}

/// Which broker a stack's services use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerChoice {
    /// One the stack starts, on its own ports and data, and may kill,
    /// restart or put behind a fault proxy.
    Own,
    /// A broker that runs already (the test run's, see
    /// [`SHARED_BROKER_VAR`]): the stack keeps to topics and groups
    /// whose names start with `topic_prefix`, and never stops it.
    Shared {
        /// A login to it as its super user.
        admin: Connection,
        topic_prefix: String,
    },
}

impl BrokerChoice {
    /// The run's shared broker under a fresh topic prefix when there is
    /// one, else a broker of the stack's own.
    pub fn for_tests() -> Self {
        match crate::broker::shared_broker() {
            Some(admin) => Self::Shared {
                admin,
                topic_prefix: crate::broker::test_topic_prefix(),
            },
            None => Self::Own,
        }
    }
}

/// How to start a [`Stack`].
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Standard or free ports.
    pub ports: Ports,
    /// Databases are named `<prefix>_order`, `<prefix>_inventory`, ...
    pub database_prefix: String,
    /// Where the service binaries are (`<target>/debug` or `/release`).
    pub bin_dir: PathBuf,
    /// Where each process's output goes (`<log_dir>/<service>.log`,
    /// `<log_dir>/broker.log`); created if missing, appended to.
    pub log_dir: PathBuf,
    /// Extra environment per service, applied last (so it can override
    /// anything the stack sets), e.g. a short `SAGA_DEADLINE_MS`.
    pub env: BTreeMap<Service, BTreeMap<String, String>>,
    /// Keep the databases when the stack stops (local runs), instead of
    /// dropping them (tests).
    pub keep_databases: bool,
    /// Start every process in its own process group, so a terminal's Ctrl-C
    /// reaches only the caller, which then stops the stack in order
    /// (gateway first, broker last). Tests leave it off: a test runner that
    /// kills a hung test's process group then stops its stack too.
    pub own_process_group: bool,
    /// How long every process has to become ready.
    pub ready_timeout: Duration,
    /// Links routed through a fault-injection proxy ([`Stack::fault`]).
    pub proxied: BTreeSet<Link>,
    /// The HS256 secret the gateway checks bearer tokens with, and
    /// [`Stack::token`] signs them with.
    pub jwt_secret: String,
    /// The stack's own broker, or a shared one.
    pub broker: BrokerChoice,
    /// How many replicas of each of [`Service::REPLICATED`] start (at
    /// least 1).
    pub replicas: usize,
    /// How many replicas of each may run at once: their ports are taken at
    /// start and every gRPC client is given all their addresses, so
    /// [`Stack::add_replica`] can scale out up to this many. At least
    /// `replicas`.
    pub max_replicas: usize,
    /// Whether gRPC runs over mutual TLS (default true): the stack makes a
    /// development CA and a certificate for each gRPC peer in
    /// `<log_dir>/tls/`, and each server lets in only the callers its
    /// policy names. Off, any process on the machine may call the ports.
    pub grpc_tls: bool,
    /// Whether the broker wants logins and checks ACLs (default true; see
    /// `crate::broker`). Off, on a broker of the stack's own only, the
    /// services connect without a login and create their own topics: only
    /// for measuring what the security costs.
    pub broker_security: bool,
    /// Whether the broker's client listener is `SASL_SSL` (default false:
    /// `SASL_PLAINTEXT` on loopback), with a certificate of a CA the stack
    /// makes in `<log_dir>/broker-tls/`, as the chart's production values
    /// run it. Only on a broker of the stack's own, with `broker_security`.
    pub broker_tls: bool,
}

impl StackOptions {
    /// Options for a test: free ports, fresh databases with a random prefix
    /// (`shipshape_t<8 hex>`) dropped when the stack goes away, binaries
    /// from [`default_bin_dir`], logs in `<bin_dir>/test-logs/<prefix>/`.
    pub fn for_tests() -> anyhow::Result<Self> {
        let bin_dir = default_bin_dir()?;
        let database_prefix = test_database_prefix();
        Ok(Self {
            ports: Ports::Free,
            log_dir: bin_dir.join("test-logs").join(&database_prefix),
            database_prefix,
            bin_dir,
            env: BTreeMap::new(),
            keep_databases: false,
            own_process_group: false,
            ready_timeout: Duration::from_secs(60),
            proxied: BTreeSet::new(),
            jwt_secret: auth::random_secret()?,
            broker: BrokerChoice::for_tests(),
            replicas: 1,
            max_replicas: 1,
            grpc_tls: true,
            broker_security: true,
            broker_tls: false,
        })
    }

    /// Options for a local run: standard ports, databases `shipshape_*` that
    /// are kept between runs, each process in its own process group. Set
    /// [`StackOptions::jwt_secret`]: `cargo xtask up` uses
    /// [`auth::dev_secret`], so tokens minted by `cargo xtask token` keep
    /// working across runs.
    pub fn local(bin_dir: impl Into<PathBuf>, log_dir: impl Into<PathBuf>) -> Self {
        Self {
            ports: Ports::Standard,
            database_prefix: "shipshape".to_owned(),
            bin_dir: bin_dir.into(),
            log_dir: log_dir.into(),
            env: BTreeMap::new(),
            keep_databases: true,
            own_process_group: true,
            ready_timeout: Duration::from_secs(60),
            proxied: BTreeSet::new(),
            jwt_secret: String::new(),
            broker: BrokerChoice::Own,
            replicas: 1,
            max_replicas: 1,
            grpc_tls: true,
            broker_security: true,
            broker_tls: false,
        }
    }

    /// Options for a stack a tool starts for one run (the load test,
    /// schemathesis): free ports, fresh databases `shipshape_<tag><8 hex>_*`
    /// dropped afterwards, a random token secret (mint with
    /// [`Stack::token`] or [`auth::minter`]), each process in its own
    /// process group so Ctrl-C reaches only the tool, which stops the stack
    /// in order.
    pub fn scratch(
        bin_dir: impl Into<PathBuf>,
        log_dir: impl Into<PathBuf>,
        tag: &str,
    ) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            database_prefix: format!("shipshape_{tag}{}", &id[..8]),
            ports: Ports::Free,
            keep_databases: false,
            jwt_secret: auth::random_secret()?,
            ..Self::local(bin_dir, log_dir)
        })
    }

    /// Raises the gateway's per-client limits (its rate limit, the requests
    /// and connections one client may have open) far above anything a tool
    /// sends: a tool is one client on one address, so the limits would be
    /// what it measures. The limiters still run on every request.
    pub fn with_client_limits_out_of_reach(self) -> Self {
        const UNREACHABLE: &str = "1000000";
        self.with_env(Service::Gateway, "RATE_LIMIT_PER_SECOND", UNREACHABLE)
            .with_env(Service::Gateway, "RATE_LIMIT_BURST", UNREACHABLE)
            .with_env(Service::Gateway, "MAX_IN_FLIGHT_PER_CLIENT", UNREACHABLE)
            .with_env(
                Service::Gateway,
                "HTTP_MAX_CONNECTIONS_PER_ADDRESS",
                UNREACHABLE,
            )
    }

    /// Routes `link` through a fault-injection proxy. A proxy in front of
    /// the broker needs a broker of the stack's own: a broker advertises
    /// the address clients reconnect to, the proxy's.
    pub fn with_proxy(mut self, link: Link) -> Self {
        if link == Link::Broker {
            self.broker = BrokerChoice::Own;
        }
        self.proxied.insert(link);
        self
    }

    /// Runs `replicas` replicas of each of [`Service::REPLICATED`], and
    /// lets the stack scale out to `max_replicas` ([`Stack::add_replica`]).
    pub fn with_replicas(mut self, replicas: usize, max_replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self.max_replicas = max_replicas.max(self.replicas);
        self
    }

    /// Starts a broker for this stack alone, which it may kill and restart
    /// ([`Stack::kill_broker`]), even when the run shares one.
    pub fn with_own_broker(mut self) -> Self {
        self.broker = BrokerChoice::Own;
        self
    }

    /// Starts a broker for this stack alone whose clients connect over TLS
    /// (`SASL_SSL`; [`StackOptions::broker_tls`]).
    pub fn with_broker_tls(mut self) -> Self {
        self.broker = BrokerChoice::Own;
        self.broker_tls = true;
        self
    }

    /// Sets environment variable `name` for `service`.
    pub fn with_env(
        mut self,
        service: Service,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.env
            .entry(service)
            .or_default()
            .insert(name.into(), value.into());
        self
    }
}

/// A fresh database prefix for a test: `shipshape_t` and 8 random hex digits.
pub fn test_database_prefix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{TEST_DATABASE_PREFIX}{}", &id[..8])
}

/// Where the service binaries are for a test: [`BIN_DIR_VAR`] if set, else
/// the profile directory of the running test binary (tests live in
/// `<target>/debug/deps/`, the services in `<target>/debug/`).
pub fn default_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_VAR) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("finding the running executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir = dir.parent().unwrap_or(dir);
    }
    Ok(dir.to_owned())
}
