//! The whole Shipshape stack as local processes: the broker, one database
//! per service and the six binaries, wired through the environment variables
//! each service reads (see [`vars`]).
//!
//! Tests start a stack on free ports with fresh databases
//! ([`StackOptions::for_tests`]) and can kill, stop and restart any service;
//! `cargo xtask up` starts one on the standard ports ([`StackOptions::local`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use shipshape_faultproxy::{FaultControl, FaultProxy};

use crate::auth;
use crate::broker::{Broker, BrokerConfig, Installation, SHARED_BROKER_VAR};
use crate::postgres;
use crate::process::{Process, Stopped};

/// The names of the environment variables the processes read: the process
/// contract, in one place.
pub mod vars {
    /// Every process: `host:port` of its ops server (`/healthz`, `/readyz`).
    pub const OPS_ADDR: &str = "OPS_ADDR";
    /// Every process: the log filter.
    pub const RUST_LOG: &str = "RUST_LOG";
    /// Every process: `json` for one JSON object per log line.
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    /// Order, inventory, payment, shipping: the URL of its own database.
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// Order, inventory, payment, shipping: the broker's `host:port`.
    pub const KAFKA_BROKERS: &str = "KAFKA_BROKERS";
    /// Same: put before every topic and group name, on a shared broker.
    pub const KAFKA_TOPIC_PREFIX: &str = "KAFKA_TOPIC_PREFIX";
    /// Same: the partition count of the topics the service creates.
    pub const KAFKA_TOPIC_PARTITIONS: &str = "KAFKA_TOPIC_PARTITIONS";
    /// Order, inventory, payment, shipping: the consumer-group session timeout.
    pub const KAFKA_SESSION_TIMEOUT_MS: &str = "KAFKA_SESSION_TIMEOUT_MS";
    /// Order and inventory: where the gRPC server listens.
    pub const GRPC_ADDR: &str = "GRPC_ADDR";
    /// Order and gateway: the inventory service's gRPC URL.
    pub const INVENTORY_URL: &str = "INVENTORY_URL";
    /// Order: how long an order may stay PENDING (default 30000).
    pub const SAGA_DEADLINE_MS: &str = "SAGA_DEADLINE_MS";
    /// Order: how often expired orders are looked for.
    pub const SAGA_SWEEP_INTERVAL_MS: &str = "SAGA_SWEEP_INTERVAL_MS";
    /// Payment: the PSP simulator's HTTP URL.
    pub const PSP_URL: &str = "PSP_URL";
    /// Payment: the timeout of one PSP call.
    pub const PSP_TIMEOUT_MS: &str = "PSP_TIMEOUT_MS";
    /// Gateway and PSP simulator: where the HTTP server listens.
    pub const HTTP_ADDR: &str = "HTTP_ADDR";
    /// Gateway: the order service's gRPC URL.
    pub const ORDER_URL: &str = "ORDER_URL";
    /// Gateway: who issues the bearer tokens it accepts, and for whom.
    pub const JWT_ISSUER: &str = "JWT_ISSUER";
    pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
    /// Gateway: the HS256 secret bearer tokens are checked with.
    pub const JWT_HS256_SECRET: &str = "JWT_HS256_SECRET";
    /// PSP simulator: the delay of the "slow card".
    pub const PSP_SLOW_CARD_DELAY_MS: &str = "PSP_SLOW_CARD_DELAY_MS";
    /// PSP simulator: the file its ledger is journaled to and restored from,
    /// so that a restart (even after SIGKILL) forgets no charge.
    pub const PSP_JOURNAL_PATH: &str = "PSP_JOURNAL_PATH";
}

/// The prefix of every database a test stack creates; `cargo xtask test`
/// drops leftovers with it before a run.
pub const TEST_DATABASE_PREFIX: &str = "shipshape_t";

/// The environment variable naming the directory of the service binaries.
pub const BIN_DIR_VAR: &str = "SHIPSHAPE_BIN_DIR";

/// The PSP simulator's journal, in the log directory.
const PSP_JOURNAL_FILE: &str = "psp-ledger.jsonl";

/// The broker's data directory, in the log directory.
const BROKER_DATA_DIR: &str = "broker-data";

/// How long a SIGTERMed service has to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Lines of a process's log quoted in error messages.
const LOG_TAIL_LINES: usize = 30;

/// The consumer-group session timeout every service gets: short (Kafka's
/// default is 45 s), so the broker gives up on a SIGKILLed consumer and
/// moves its partitions on within seconds.
const KAFKA_SESSION_TIMEOUT_MS: &str = "6000";

/// The fewest partitions a stack's topics get (the services' own default);
/// a stack that may scale beyond it gets one partition per replica, so no
/// replica idles.
const MIN_TOPIC_PARTITIONS: usize = 3;

/// Proxy variables removed from the services' environment: everything they
/// call is on 127.0.0.1.
const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// One of the stack's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Gateway,
    Order,
    Inventory,
    Payment,
    Shipping,
    /// The payment-service-provider simulator.
    Psp,
}

impl Service {
    /// Every process, in the order of their standard ops ports.
    pub const ALL: [Service; 6] = [
        Service::Gateway,
        Service::Order,
        Service::Inventory,
        Service::Payment,
        Service::Shipping,
        Service::Psp,
    ];

    /// The services that own a database.
    pub const WITH_DATABASE: [Service; 4] = [
        Service::Order,
        Service::Inventory,
        Service::Payment,
        Service::Shipping,
    ];

    /// The services a stack runs several replicas of
    /// ([`StackOptions::replicas`]): those that share work through a
    /// consumer group and their database. The gateway stays one process,
    /// the single address a test's client uses, and the PSP simulator
    /// stands for one outside provider.
    pub const REPLICATED: [Service; 4] = Service::WITH_DATABASE;

    /// Start order: what others call comes first (they would retry anyway,
    /// but their logs stay quieter).
    const START_ORDER: [Service; 6] = [
        Service::Psp,
        Service::Inventory,
        Service::Order,
        Service::Payment,
        Service::Shipping,
        Service::Gateway,
    ];

    /// Its short name: `gateway`, `order`, ..., `psp-simulator`; also the
    /// name of its log file.
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Order => "order",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
            Service::Shipping => "shipping",
            Service::Psp => "psp-simulator",
        }
    }

    /// Its binary's file name, as `cargo build --bins` produces it.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Gateway => "shipshape-gateway",
            Service::Order => "shipshape-order",
            Service::Inventory => "shipshape-inventory",
            Service::Payment => "shipshape-payment",
            Service::Shipping => "shipshape-shipping",
            Service::Psp => "shipshape-psp-simulator",
        }
    }

    /// Its ops server's standard port: 9100 (gateway) to 9105 (PSP).
    pub fn standard_ops_port(self) -> u16 {
        9100 + self.index() as u16
    }

    /// The role it logs in to its database as (`shipshape_order`, ...),
    /// shared by every stack; `None` for the gateway and the PSP simulator,
    /// which own no database.
    pub fn role(self) -> Option<String> {
        self.owns_database()
            .then(|| format!("shipshape_{}", self.name()))
    }

    /// Whether it owns a database.
    pub fn owns_database(self) -> bool {
        Self::WITH_DATABASE.contains(&self)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One process of the stack: a service and which of its replicas (0 is the
/// first). A [`Service`] stands for its first replica wherever a replica
/// is asked for, so a stack of one replica each reads as before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Replica {
    pub service: Service,
    pub index: usize,
}

impl Replica {
    pub fn new(service: Service, index: usize) -> Self {
        Self { service, index }
    }

    /// Its name in logs and messages: `order` for the first replica,
    /// `order-1` for the second, ...; also its log file's name.
    pub fn name(self) -> String {
        match self.index {
            0 => self.service.name().to_owned(),
            index => format!("{}-{index}", self.service.name()),
        }
    }
}

impl From<Service> for Replica {
    fn from(service: Service) -> Self {
        Self::new(service, 0)
    }
}

impl fmt::Display for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Which ports the stack listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ports {
    /// The documented ones: gateway 8080, gRPC 50051/50052, PSP 8090, ops
    /// 9100-9105, broker 9092 (its controller 9093). For `cargo xtask up`.
    Standard,
    /// Free ports chosen at start, so parallel tests never collide.
    Free,
}

/// The ports one stack uses.
#[derive(Clone, Debug)]
struct PortMap {
    gateway_http: u16,
    psp_http: u16,
    broker: u16,
    broker_controller: u16,
    /// The gRPC port of every replica of order and inventory.
    grpc: BTreeMap<Replica, u16>,
    /// The ops port of every replica.
    ops: BTreeMap<Replica, u16>,
}

/// How far apart the standard ports of two replicas of a service are:
/// order's gRPC is 50051, 50061, 50071, ...; its ops port 9101, 9111, ...
const STANDARD_REPLICA_STRIDE: u16 = 10;

impl PortMap {
    /// The standard ports for `replicas` replicas of each replicated service.
    fn standard(replicas: usize) -> Self {
        let mut ports = Self {
            gateway_http: 8080,
            psp_http: 8090,
            broker: 9092,
            broker_controller: 9093,
            grpc: BTreeMap::new(),
            ops: BTreeMap::new(),
        };
        for replica in all_replicas(replicas) {
            let offset = STANDARD_REPLICA_STRIDE * replica.index as u16;
            ports
                .ops
                .insert(replica, replica.service.standard_ops_port() + offset);
            let grpc = match replica.service {
                Service::Order => 50051,
                Service::Inventory => 50052,
                _ => continue,
            };
            ports.grpc.insert(replica, grpc + offset);
        }
        ports
    }

    /// Free ports for `replicas` replicas of each replicated service.
    fn free(replicas: usize) -> anyhow::Result<Self> {
        let replicas_list = all_replicas(replicas);
        let grpc_count = replicas_list
            .iter()
            .filter(|r| matches!(r.service, Service::Order | Service::Inventory))
            .count();
        let mut ports = crate::ports::free_ports(4 + replicas_list.len() + grpc_count)
            .context("finding free ports on 127.0.0.1")?
            .into_iter();
        let mut next = || ports.next().context("fewer free ports than asked for");
        let mut map = Self {
            gateway_http: next()?,
            psp_http: next()?,
            broker: next()?,
            broker_controller: next()?,
            grpc: BTreeMap::new(),
            ops: BTreeMap::new(),
        };
        for replica in replicas_list {
            map.ops.insert(replica, next()?);
            if matches!(replica.service, Service::Order | Service::Inventory) {
                map.grpc.insert(replica, next()?);
            }
        }
        Ok(map)
    }

    fn ops(&self, replica: Replica) -> u16 {
        self.ops[&replica]
    }

    /// The gRPC port of a replica of order or inventory.
    fn grpc(&self, replica: Replica) -> Option<u16> {
        self.grpc.get(&replica).copied()
    }

    /// The gRPC ports of every replica of `service`, first replica first.
    fn grpc_of(&self, service: Service) -> Vec<u16> {
        self.grpc
            .iter()
            .filter(|(replica, _)| replica.service == service)
            .map(|(_, port)| *port)
            .collect()
    }

    /// Every port with what it is for.
    fn describe(&self) -> Vec<(String, u16)> {
        let mut all = vec![
            ("gateway HTTP".to_owned(), self.gateway_http),
            ("PSP HTTP".to_owned(), self.psp_http),
            ("broker".to_owned(), self.broker),
            ("broker controller".to_owned(), self.broker_controller),
        ];
        all.extend(
            self.grpc
                .iter()
                .map(|(replica, port)| (format!("{replica} gRPC"), *port)),
        );
        all.extend(
            self.ops
                .iter()
                .map(|(replica, port)| (format!("{replica} ops"), *port)),
        );
        all
    }
}

/// Every process of a stack with `replicas` replicas of each replicated
/// service, in [`Service::ALL`] order.
fn all_replicas(replicas: usize) -> Vec<Replica> {
    Service::ALL
        .iter()
        .flat_map(|&service| {
            let count = if Service::REPLICATED.contains(&service) {
                replicas.max(1)
            } else {
                1
            };
            (0..count).map(move |index| Replica::new(service, index))
        })
        .collect()
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
        address: String,
        topic_prefix: String,
    },
}

impl BrokerChoice {
    /// The run's shared broker under a fresh topic prefix when there is
    /// one, else a broker of the stack's own.
    pub fn for_tests() -> Self {
        match crate::broker::shared_broker() {
            Some(address) => Self::Shared {
                address,
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

/// A running stack. Dropping it kills every process and (unless
/// `keep_databases`) drops its databases; [`Stack::stop`] stops it
/// gracefully instead.
pub struct Stack {
    options: StackOptions,
    ports: PortMap,
    admin_url: String,
    /// Database URL per service.
    database_urls: BTreeMap<Service, String>,
    /// Databases this stack created (or tried to), dropped at the end.
    databases: Vec<String>,
    /// `None` while the broker is down ([`Stack::kill_broker`]).
    broker: Option<Broker>,
    /// The Java runtime and jars the stack's own broker runs on, to start
    /// it again; `None` on a shared broker.
    installation: Option<Installation>,
    processes: BTreeMap<Replica, Process>,
    proxies: BTreeMap<Link, FaultProxy>,
}

impl Stack {
    /// Starts everything and returns once every process answers `/readyz`
    /// with 200: finds (or starts) Postgres, creates the four databases and
    /// their roles, starts the broker, then the six processes.
    ///
    /// Fails (after cleaning up what it started) when a binary is missing,
    /// a standard port is taken, a process exits during start-up, or a
    /// process is not ready within `ready_timeout`; the error names the
    /// process and quotes the end of its log.
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        check_binaries(&options.bin_dir)?;
        let max_replicas = options.max_replicas.max(options.replicas).max(1);
        if max_replicas > 1
            && options.proxied.iter().any(|link| {
                matches!(
                    link,
                    Link::GatewayToOrder | Link::GatewayToInventory | Link::OrderToInventory
                )
            })
        {
            bail!(
                "a proxied gRPC link forwards to one replica; run proxied gRPC links with one \
                 replica per service"
            );
        }
        let installation = match options.broker {
            BrokerChoice::Own => Some(Installation::install()?),
            BrokerChoice::Shared { .. } if options.proxied.contains(&Link::Broker) => {
                bail!("a shared broker cannot be proxied: use StackOptions::with_own_broker")
            }
            BrokerChoice::Shared { .. } => None,
        };
        if options.ports == Ports::Standard {
            check_ports_free(&PortMap::standard(max_replicas))?;
        }
        std::fs::create_dir_all(&options.log_dir)
            .with_context(|| format!("creating log directory {}", options.log_dir.display()))?;
        if !options.keep_databases {
            forget_earlier_runs(&options.log_dir)?;
        }
        let admin_url = postgres::ensure_server().await?;
        let (databases, database_urls) =
            create_databases(&admin_url, &options.database_prefix, options.keep_databases).await?;
        // Free ports are chosen last, so nothing else can take one of them
        // in the moment before its process binds it.
        let ports = match options.ports {
            Ports::Standard => PortMap::standard(max_replicas),
            Ports::Free => PortMap::free(max_replicas)?,
        };

        // From here on, dropping `stack` cleans up whatever was started.
        let mut stack = Stack {
            options,
            ports,
            admin_url,
            database_urls,
            databases,
            broker: None,
            installation,
            processes: BTreeMap::new(),
            proxies: BTreeMap::new(),
        };
        for link in stack.options.proxied.clone() {
            let upstream = stack.link_upstream(link)?;
            let proxy = FaultProxy::start(([127, 0, 0, 1], 0).into(), upstream)
                .await
                .with_context(|| format!("starting the fault proxy for {link:?}"))?;
            stack.proxies.insert(link, proxy);
        }
        if stack.options.broker == BrokerChoice::Own {
            stack.broker = Some(stack.spawn_broker().await?);
        }
        let replicas = stack.options.replicas.max(1);
        for service in Service::START_ORDER {
            let count = if Service::REPLICATED.contains(&service) {
                replicas
            } else {
                1
            };
            for index in 0..count {
                stack.spawn(Replica::new(service, index))?;
            }
        }
        let timeout = stack.options.ready_timeout;
        stack.wait_all_ready(timeout).await?;
        Ok(stack)
    }

    /// Starts the broker; its data lives in `<log_dir>/broker-data/`, so a
    /// broker started again after a kill has every acknowledged message.
    async fn spawn_broker(&self) -> anyhow::Result<Broker> {
        let config = BrokerConfig {
            advertised_port: self.broker_port(),
            own_process_group: self.options.own_process_group,
            ..BrokerConfig::new(
                self.ports.broker,
                self.ports.broker_controller,
                self.options.log_dir.join(BROKER_DATA_DIR),
                self.options.log_dir.join("broker.log"),
            )
        };
        let installation = self.installation.as_ref().ok_or_else(|| {
            anyhow!(
                "this stack uses the run's shared broker ({SHARED_BROKER_VAR}), which it may not \
                 kill or restart: start it with StackOptions::with_own_broker"
            )
        })?;
        Broker::start(installation, config).await
    }

    /// The `host:port` a link's proxy forwards to.
    fn link_upstream(&self, link: Link) -> anyhow::Result<String> {
        let port = match link {
            Link::Broker => self.ports.broker,
            Link::GatewayToOrder => self.first_grpc(Service::Order)?,
            Link::GatewayToInventory | Link::OrderToInventory => {
                self.first_grpc(Service::Inventory)?
            }
            Link::PaymentToPsp => self.ports.psp_http,
            Link::Database(_) => return postgres::tcp_address(&self.admin_url),
        };
        Ok(format!("127.0.0.1:{port}"))
    }

    /// The gRPC port of `service`'s first replica.
    fn first_grpc(&self, service: Service) -> anyhow::Result<u16> {
        self.ports
            .grpc(Replica::from(service))
            .ok_or_else(|| anyhow!("{service} serves no gRPC"))
    }

    /// The ports clients use for `link` (one of the stack's own): its
    /// proxy's when it has one, else every replica's at the far end.
    fn ports_for(&self, link: Link) -> Vec<u16> {
        if let Some(proxy) = self.proxies.get(&link) {
            return vec![proxy.local_addr().port()];
        }
        match link {
            Link::Broker => vec![self.ports.broker],
            Link::GatewayToOrder => self.ports.grpc_of(Service::Order),
            Link::GatewayToInventory | Link::OrderToInventory => {
                self.ports.grpc_of(Service::Inventory)
            }
            Link::PaymentToPsp => vec![self.ports.psp_http],
            Link::Database(_) => unreachable!("a database is no port of the stack's"),
        }
    }

    /// The port clients use for a link with one process at its far end.
    fn port_for(&self, link: Link) -> u16 {
        self.ports_for(link)[0]
    }

    /// `http://` URLs of every port of `link`, comma-separated, as the
    /// services read a list of replicas.
    fn urls_for(&self, link: Link) -> String {
        self.ports_for(link)
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port Kafka clients connect to.
    fn broker_port(&self) -> u16 {
        self.port_for(Link::Broker)
    }

    /// The fault control of a proxied link; fails when the stack was not
    /// started with that link proxied ([`StackOptions::with_proxy`]).
    pub fn fault(&self, link: Link) -> anyhow::Result<FaultControl> {
        self.proxies
            .get(&link)
            .map(FaultProxy::control)
            .ok_or_else(|| anyhow!("{link:?} is not proxied; start the stack with_proxy({link:?})"))
    }

    /// A bearer token the gateway accepts, for customer `subject` with
    /// `scopes` (`["admin"]` for the operators' API), valid for an hour.
    pub fn token(&self, subject: &str, scopes: &[&str]) -> anyhow::Result<String> {
        auth::minter(&self.options.jwt_secret)?.mint(subject, scopes, auth::TOKEN_TTL)
    }

    /// The environment `replica` is started with.
    fn env_for(&self, replica: impl Into<Replica>) -> BTreeMap<String, String> {
        let replica = replica.into();
        let service = replica.service;
        let local = |port: u16| format!("127.0.0.1:{port}");
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let p = &self.ports;
        let mut env = BTreeMap::new();
        let mut set = |name: &str, value: String| {
            env.insert(name.to_owned(), value);
        };
        set(vars::OPS_ADDR, local(p.ops(replica)));
        set(
            vars::RUST_LOG,
            std::env::var(vars::RUST_LOG).unwrap_or_else(|_| "info".to_owned()),
        );
        if let Some(database_url) = self.database_urls.get(&service) {
            let database_url = match self.proxies.get(&Link::Database(service)) {
                Some(proxy) => postgres::via(database_url, proxy.local_addr().port()),
                None => database_url.clone(),
            };
            set(vars::DATABASE_URL, database_url);
            set(vars::KAFKA_BROKERS, self.broker_address());
            if let BrokerChoice::Shared { topic_prefix, .. } = &self.options.broker {
                set(vars::KAFKA_TOPIC_PREFIX, topic_prefix.clone());
            }
            set(
                vars::KAFKA_SESSION_TIMEOUT_MS,
                KAFKA_SESSION_TIMEOUT_MS.to_owned(),
            );
            set(
                vars::KAFKA_TOPIC_PARTITIONS,
                self.options
                    .max_replicas
                    .max(MIN_TOPIC_PARTITIONS)
                    .to_string(),
            );
        }
        match service {
            Service::Gateway => {
                set(vars::HTTP_ADDR, local(p.gateway_http));
                set(vars::JWT_ISSUER, auth::DEV_ISSUER.to_owned());
                set(vars::JWT_AUDIENCE, auth::DEV_AUDIENCE.to_owned());
                set(vars::JWT_HS256_SECRET, self.options.jwt_secret.clone());
                set(vars::ORDER_URL, self.urls_for(Link::GatewayToOrder));
                set(vars::INVENTORY_URL, self.urls_for(Link::GatewayToInventory));
            }
            Service::Order => {
                if let Some(port) = p.grpc(replica) {
                    set(vars::GRPC_ADDR, local(port));
                }
                set(vars::INVENTORY_URL, self.urls_for(Link::OrderToInventory));
            }
            Service::Inventory => {
                if let Some(port) = p.grpc(replica) {
                    set(vars::GRPC_ADDR, local(port));
                }
            }
            Service::Payment => set(vars::PSP_URL, url(self.port_for(Link::PaymentToPsp))),
            Service::Shipping => {}
            Service::Psp => {
                set(vars::HTTP_ADDR, local(p.psp_http));
                set(
                    vars::PSP_JOURNAL_PATH,
                    self.options
                        .log_dir
                        .join(PSP_JOURNAL_FILE)
                        .display()
                        .to_string(),
                );
            }
        }
        if let Some(extra) = self.options.env.get(&service) {
            env.extend(extra.clone());
        }
        env
    }

    fn spawn(&mut self, replica: Replica) -> anyhow::Result<()> {
        if !self.ports.ops.contains_key(&replica) {
            bail!(
                "{replica} is beyond the stack's {} replicas (StackOptions::max_replicas)",
                self.options.max_replicas.max(1)
            );
        }
        let mut command = Command::new(self.options.bin_dir.join(replica.service.binary()));
        for var in PROXY_VARS {
            command.env_remove(var);
        }
        command.envs(self.env_for(replica));
        let process = Process::spawn(
            &replica.name(),
            command,
            &self.log_path(replica),
            self.options.own_process_group,
        )?;
        self.processes.insert(replica, process);
        Ok(())
    }

    /// Waits until every process the stack started answers `/readyz` with
    /// 200; fails as soon as one has exited. See [`Stack::wait_ready`].
    pub async fn wait_all_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started: Vec<Replica> = self.processes.keys().copied().collect();
        self.wait_ready(&started, timeout).await
    }

    /// Polls `/readyz` of each of `replicas` until all answer 200. Fails as
    /// soon as one exits, or when `timeout` passes, with the end of the log
    /// of each process concerned.
    pub async fn wait_ready(
        &mut self,
        replicas: &[Replica],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let client = crate::http::client()?;
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<Replica> = replicas.to_vec();
        let mut last_answer: BTreeMap<Replica, String> = BTreeMap::new();
        loop {
            for &service in &pending {
                let process = self.process_mut(service)?;
                if let Some(status) = process.try_status()? {
                    bail!(
                        "{service} exited before it was ready ({status}); last {LOG_TAIL_LINES} \
                         lines of {}:\n{}",
                        process.log_path().display(),
                        process.log_tail(LOG_TAIL_LINES)
                    );
                }
            }
            let mut still_pending = Vec::new();
            for service in pending {
                let url = format!("{}/readyz", self.ops_url(service));
                let request = client.get(&url).timeout(Duration::from_secs(1)).send();
                let answer = match request.await {
                    Ok(response) if response.status().is_success() => continue,
                    Ok(response) => {
                        let status = response.status();
                        let body = response.text().await.unwrap_or_default();
                        format!("GET {url} answered {status} {}", body.trim())
                    }
                    Err(e) => format!("GET {url} failed: {:#}", anyhow::Error::from(e)),
                };
                last_answer.insert(service, answer);
                still_pending.push(service);
            }
            pending = still_pending;
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut message = format!(
                    "not ready within {timeout:?}: {}",
                    pending
                        .iter()
                        .map(|replica| replica.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for service in &pending {
                    let process = self.process_mut(*service)?;
                    message.push_str(&format!(
                        "\n\n{service}: {}\nlast {LOG_TAIL_LINES} lines of {}:\n{}",
                        last_answer.get(service).map_or("", String::as_str),
                        process.log_path().display(),
                        process.log_tail(LOG_TAIL_LINES)
                    ));
                }
                bail!(message);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn process_mut(&mut self, replica: impl Into<Replica>) -> anyhow::Result<&mut Process> {
        let replica = replica.into();
        self.processes
            .get_mut(&replica)
            .ok_or_else(|| anyhow!("{replica} was never started"))
    }

    /// The gateway's public HTTP API, e.g. `http://127.0.0.1:8080`.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.gateway_http)
    }

    /// The PSP simulator's HTTP API (including its admin endpoints).
    pub fn psp_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.psp_http)
    }

    /// The base URL of a replica's ops server (append `/readyz`, ...).
    pub fn ops_url(&self, replica: impl Into<Replica>) -> String {
        format!("http://127.0.0.1:{}", self.ports.ops(replica.into()))
    }

    /// The gRPC URL of a replica of the order or inventory service; `None`
    /// for the others, which serve no gRPC.
    pub fn grpc_url(&self, replica: impl Into<Replica>) -> Option<String> {
        let port = self.ports.grpc(replica.into())?;
        Some(format!("http://127.0.0.1:{port}"))
    }

    /// The URL of `service`'s database, as the service connects to it;
    /// `None` for the gateway and the PSP simulator.
    pub fn database_url(&self, service: Service) -> Option<&str> {
        self.database_urls.get(&service).map(String::as_str)
    }

    /// The broker's `host:port`, for test consumers and producers.
    pub fn broker_address(&self) -> String {
        match &self.options.broker {
            BrokerChoice::Own => format!("127.0.0.1:{}", self.broker_port()),
            BrokerChoice::Shared { address, .. } => address.clone(),
        }
    }

    /// What the services put before every topic and group name: empty on
    /// a broker of the stack's own.
    pub fn topic_prefix(&self) -> &str {
        match &self.options.broker {
            BrokerChoice::Own => "",
            BrokerChoice::Shared { topic_prefix, .. } => topic_prefix,
        }
    }

    /// The name topic (or group) `name` has on the broker for this stack.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix())
    }

    /// Where a replica's stdout and stderr go: `<log_dir>/order.log` for
    /// the first replica of order, `order-1.log` for the second, ...
    pub fn log_path(&self, replica: impl Into<Replica>) -> PathBuf {
        self.options
            .log_dir
            .join(format!("{}.log", replica.into().name()))
    }

    /// The directory of all log files.
    pub fn log_dir(&self) -> &Path {
        &self.options.log_dir
    }

    /// The process id of a replica, if it was started.
    pub fn pid(&self, replica: impl Into<Replica>) -> Option<u32> {
        self.processes.get(&replica.into()).map(Process::pid)
    }

    /// Every replica started so far (running or not), in service order.
    pub fn replicas(&self) -> Vec<Replica> {
        self.processes.keys().copied().collect()
    }

    /// The broker's process id.
    pub fn broker_pid(&self) -> Option<u32> {
        self.broker.as_ref().map(Broker::pid)
    }

    /// The processes that have exited (crashed, or were killed or stopped),
    /// with their exit status.
    pub fn exited(&mut self) -> anyhow::Result<Vec<(Replica, ExitStatus)>> {
        let mut exited = Vec::new();
        for (&replica, process) in &mut self.processes {
            if let Some(status) = process.try_status()? {
                exited.push((replica, status));
            }
        }
        Ok(exited)
    }

    /// Kills a replica with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self, replica: impl Into<Replica>) -> anyhow::Result<()> {
        self.process_mut(replica)?.kill().map(drop)
    }

    /// Stops `service` with SIGTERM and waits up to 15 s for it to exit.
    /// Returns its exit status (success for a graceful shutdown); fails if
    /// it had to be killed.
    pub async fn terminate(&mut self, replica: impl Into<Replica>) -> anyhow::Result<ExitStatus> {
        let replica = replica.into();
        match self.process_mut(replica)?.terminate(STOP_GRACE).await? {
            Stopped::Exited(status) => Ok(status),
            Stopped::Killed(_) => bail!(
                "{replica} did not exit within {STOP_GRACE:?} of SIGTERM and was killed; \
                 see {}",
                self.log_path(replica).display()
            ),
        }
    }

    /// Ends every connection to `service`'s database (`pg_terminate_backend`),
    /// as a database restart or failover would; returns how many were
    /// ended. Fails for a service without a database.
    pub async fn terminate_database_connections(&self, service: Service) -> anyhow::Result<u64> {
        if !service.owns_database() {
            bail!("{service} has no database");
        }
        let name = format!("{}_{}", self.options.database_prefix, service.name());
        postgres::terminate_connections(&self.admin_url, &name).await
    }

    /// Kills the broker with SIGKILL, as a crash would. Only a broker of
    /// the stack's own ([`StackOptions::with_own_broker`]).
    pub fn kill_broker(&mut self) -> anyhow::Result<()> {
        self.own_broker()?.kill()?;
        self.broker = None;
        Ok(())
    }

    /// Freezes the stack's own broker with SIGSTOP: its connections stay
    /// open and nothing answers, as in a long garbage-collection pause.
    pub fn pause_broker(&mut self) -> anyhow::Result<()> {
        self.own_broker()?.pause()
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume_broker(&mut self) -> anyhow::Result<()> {
        self.own_broker()?.resume()
    }

    fn own_broker(&mut self) -> anyhow::Result<&mut Broker> {
        if self.installation.is_none() {
            bail!(
                "this stack uses the run's shared broker ({SHARED_BROKER_VAR}), which it may not \
                 kill, pause or restart: start it with StackOptions::with_own_broker"
            );
        }
        self.broker
            .as_mut()
            .ok_or_else(|| anyhow!("the broker is not running"))
    }

    /// Starts the broker again on the same ports and data, after
    /// [`Stack::kill_broker`] (or a crash: [`Stack::broker_exited`]).
    pub async fn start_broker(&mut self) -> anyhow::Result<()> {
        if self.broker.is_some() {
            bail!("the broker is already running");
        }
        self.broker = Some(self.spawn_broker().await?);
        Ok(())
    }

    /// Starts `service` again (after [`Stack::kill`] or [`Stack::terminate`])
    /// with the same environment and waits until it is ready.
    pub async fn start_service(&mut self, replica: impl Into<Replica>) -> anyhow::Result<()> {
        let replica = replica.into();
        self.launch(replica)?;
        let timeout = self.options.ready_timeout;
        self.wait_ready(&[replica], timeout).await
    }

    /// Starts one more replica of `service` (scale out) and waits until it
    /// is ready; returns it. Fails at [`StackOptions::max_replicas`].
    pub async fn add_replica(&mut self, service: Service) -> anyhow::Result<Replica> {
        let replica = self.launch_replica(service)?;
        let timeout = self.options.ready_timeout;
        self.wait_ready(&[replica], timeout).await?;
        Ok(replica)
    }

    /// Starts one more replica of `service` without waiting for it to be
    /// ready; returns it. Fails at [`StackOptions::max_replicas`].
    pub fn launch_replica(&mut self, service: Service) -> anyhow::Result<Replica> {
        if !Service::REPLICATED.contains(&service) {
            bail!(
                "the stack runs one {service}; only order, inventory, payment and shipping scale"
            );
        }
        let next = self
            .processes
            .keys()
            .filter(|replica| replica.service == service)
            .map(|replica| replica.index + 1)
            .max()
            .unwrap_or(0);
        let replica = Replica::new(service, next);
        self.spawn(replica)?;
        Ok(replica)
    }

    /// Starts `service` again with the same environment without waiting for
    /// it to be ready: a supervisor's restart, which must not wait on a
    /// dependency that is down ([`Stack::wait_ready`] waits).
    pub fn launch(&mut self, replica: impl Into<Replica>) -> anyhow::Result<()> {
        let replica = replica.into();
        if self.is_running(replica)? {
            bail!("{replica} is still running (pid {:?})", self.pid(replica));
        }
        self.spawn(replica)
    }

    /// Whether a replica's process is running.
    pub fn is_running(&mut self, replica: impl Into<Replica>) -> anyhow::Result<bool> {
        match self.processes.get_mut(&replica.into()) {
            Some(process) => Ok(process.try_status()?.is_none()),
            None => Ok(false),
        }
    }

    /// How the broker ended when it exited on its own (not through
    /// [`Stack::kill_broker`]); `None` while it runs or after a kill. The
    /// stack then treats it as down, so [`Stack::start_broker`] may start
    /// it again.
    pub fn broker_exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(broker) = self.broker.as_mut() else {
            return Ok(None);
        };
        let status = broker.exit_status()?;
        if status.is_some() {
            self.broker = None;
        }
        Ok(status)
    }

    /// Whether the broker is up: started and not killed through the stack
    /// (see [`Stack::broker_exited`] for one that died on its own).
    pub fn broker_running(&self) -> bool {
        self.broker.is_some() || self.installation.is_none()
    }

    /// Stops everything gracefully: SIGTERM to the gateway first (no new
    /// requests), then the saga services together, then the PSP simulator,
    /// then the broker; each has 15 s before it is killed. Then drops the
    /// databases unless `keep_databases`.
    ///
    /// Everything is stopped even when something fails; the error lists
    /// every process that had to be killed or did not exit successfully
    /// (which includes one that crashed earlier).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        let groups: [&[Service]; 3] = [
            &[Service::Gateway],
            &[
                Service::Order,
                Service::Inventory,
                Service::Payment,
                Service::Shipping,
            ],
            &[Service::Psp],
        ];
        for group in groups {
            let mut stopping = Vec::new();
            let replicas: Vec<Replica> = self
                .processes
                .keys()
                .filter(|replica| group.contains(&replica.service))
                .copied()
                .collect();
            for replica in replicas {
                if let Some(mut process) = self.processes.remove(&replica) {
                    match process.request_stop() {
                        Ok(()) => stopping.push(process),
                        Err(e) => problems.push(format!("{e:#}")),
                    }
                }
            }
            for mut process in stopping {
                match process.finish_stop(STOP_GRACE).await {
                    Ok(stopped) => problems.extend(describe_stop(&process, stopped)),
                    Err(e) => problems.push(format!("{e:#}")),
                }
            }
        }
        if let Some(broker) = self.broker.take()
            && let Err(e) = broker.stop().await
        {
            problems.push(format!("{e:#}"));
        }
        if !self.options.keep_databases {
            let names = std::mem::take(&mut self.databases);
            if let Err(e) = postgres::drop_databases(&self.admin_url, &names).await {
                problems.push(format!("{e:#}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(
                "the stack did not stop cleanly:\n- {}",
                problems.join("\n- ")
            ))
        }
    }
}

/// Removes the PSP's journal and the broker's data that an earlier stack
/// left in `log_dir`: fresh databases must meet a fresh broker and a PSP
/// that charged nobody yet.
fn forget_earlier_runs(log_dir: &Path) -> anyhow::Result<()> {
    let journal = log_dir.join(PSP_JOURNAL_FILE);
    match std::fs::remove_file(&journal) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", journal.display())),
    }
    let broker_data = log_dir.join(BROKER_DATA_DIR);
    match std::fs::remove_dir_all(&broker_data) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", broker_data.display())),
    }
}

/// A problem worth reporting about how a process stopped, if any.
fn describe_stop(process: &Process, stopped: Stopped) -> Option<String> {
    match stopped {
        Stopped::Exited(status) if status.success() => None,
        Stopped::Exited(status) => Some(format!(
            "{} exited with {status}; see {}",
            process.label(),
            process.log_path().display()
        )),
        Stopped::Killed(_) => Some(format!(
            "{} did not exit within {STOP_GRACE:?} of SIGTERM and was killed; see {}",
            process.label(),
            process.log_path().display()
        )),
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Processes first (dropping one kills and reaps it), the broker
        // last, then the databases nobody uses any more.
        self.processes.clear();
        self.broker = None;
        if !self.options.keep_databases && !self.databases.is_empty() {
            drop_databases_blocking(&self.admin_url, std::mem::take(&mut self.databases));
        }
    }
}

/// Drops `names` from synchronous code (`Drop` cannot await): on a thread of
/// its own with its own runtime, so it works inside and outside a runtime.
pub(crate) fn drop_databases_blocking(admin_url: &str, names: Vec<String>) {
    let admin_url = admin_url.to_owned();
    let dropping = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a runtime to drop the test databases")?;
        runtime.block_on(postgres::drop_databases(&admin_url, &names))
    });
    match dropping.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("shipshape-testkit: could not drop the test databases: {e:#}"),
        Err(_) => eprintln!("shipshape-testkit: dropping the test databases panicked"),
    }
}

/// Creates `<prefix>_order`, ... and their roles, concurrently. Returns the
/// database names and each service's URL. On failure, drops them again
/// unless `keep`.
async fn create_databases(
    admin_url: &str,
    prefix: &str,
    keep: bool,
) -> anyhow::Result<(Vec<String>, BTreeMap<Service, String>)> {
    let mut names = Vec::new();
    let mut creations = tokio::task::JoinSet::new();
    for service in Service::WITH_DATABASE {
        let Some(role) = service.role() else { continue };
        let name = format!("{prefix}_{}", service.name());
        names.push(name.clone());
        let admin_url = admin_url.to_owned();
        creations.spawn(async move {
            let created = postgres::create_service_database(&admin_url, &name, &role).await;
            (service, created)
        });
    }
    let mut urls = BTreeMap::new();
    let mut failure = None;
    while let Some(joined) = creations.join_next().await {
        match joined {
            Ok((service, Ok(url))) => {
                urls.insert(service, url);
            }
            Ok((_, Err(e))) => failure = Some(e),
            Err(e) => failure = Some(anyhow!("a database creation task failed: {e}")),
        }
    }
    if let Some(error) = failure {
        if !keep {
            // Best effort: the creation error is the one to report.
            let _ = postgres::drop_databases(admin_url, &names).await;
        }
        return Err(error);
    }
    Ok((names, urls))
}

fn check_binaries(bin_dir: &Path) -> anyhow::Result<()> {
    let missing: Vec<&str> = Service::ALL
        .iter()
        .map(|service| service.binary())
        .filter(|binary| !bin_dir.join(binary).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "service binaries missing in {}: {}\nRun `cargo xtask test` (it builds the service \
             binaries first), or set {BIN_DIR_VAR} to the directory that holds them",
            bin_dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

fn check_ports_free(ports: &PortMap) -> anyhow::Result<()> {
    let busy: Vec<String> = ports
        .describe()
        .into_iter()
        .filter(|(_, port)| crate::ports::in_use(*port))
        .map(|(what, port)| format!("{port} ({what})"))
        .collect();
    if !busy.is_empty() {
        bail!(
            "ports already in use on 127.0.0.1: {} (is another `cargo xtask up` running?)",
            busy.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack with no processes, to check what it would give them.
    fn idle_stack(options: StackOptions) -> Stack {
        let ports = PortMap::standard(options.max_replicas);
        let mut database_urls = BTreeMap::new();
        for service in Service::WITH_DATABASE {
            database_urls.insert(service, format!("postgres://db/{}", service.name()));
        }
        Stack {
            options,
            ports,
            admin_url: postgres::DEFAULT_ADMIN_URL.to_owned(),
            database_urls,
            databases: Vec::new(),
            broker: None,
            installation: Some(Installation::unchecked()),
            processes: BTreeMap::new(),
            proxies: BTreeMap::new(),
        }
    }

    #[test]
    fn services_follow_the_port_and_naming_conventions() {
        let ops: Vec<u16> = Service::ALL.map(Service::standard_ops_port).to_vec();
        assert_eq!(ops, [9100, 9101, 9102, 9103, 9104, 9105]);
        assert_eq!(Service::Psp.binary(), "shipshape-psp-simulator");
        assert_eq!(Service::Order.role().as_deref(), Some("shipshape_order"));
        assert_eq!(Service::Gateway.role(), None);
        for service in Service::ALL {
            assert_eq!(service.binary(), format!("shipshape-{service}"));
        }
    }

    #[test]
    fn each_process_gets_the_contracted_environment() {
        let options = StackOptions::local("/bin", "/tmp").with_env(
            Service::Order,
            vars::SAGA_DEADLINE_MS,
            "2000",
        );
        let stack = idle_stack(options);

        let order = stack.env_for(Service::Order);
        assert_eq!(order[vars::OPS_ADDR], "127.0.0.1:9101");
        assert_eq!(order[vars::GRPC_ADDR], "127.0.0.1:50051");
        assert_eq!(order[vars::INVENTORY_URL], "http://127.0.0.1:50052");
        assert_eq!(order[vars::DATABASE_URL], "postgres://db/order");
        assert_eq!(order[vars::KAFKA_BROKERS], "127.0.0.1:9092");
        assert_eq!(order[vars::KAFKA_SESSION_TIMEOUT_MS], "6000");
        assert_eq!(order[vars::KAFKA_TOPIC_PARTITIONS], "3");
        assert_eq!(order[vars::SAGA_DEADLINE_MS], "2000");
        assert!(order.contains_key(vars::RUST_LOG));

        let gateway = stack.env_for(Service::Gateway);
        assert_eq!(gateway[vars::HTTP_ADDR], "127.0.0.1:8080");
        assert_eq!(gateway[vars::ORDER_URL], "http://127.0.0.1:50051");
        assert_eq!(gateway[vars::INVENTORY_URL], "http://127.0.0.1:50052");
        assert!(!gateway.contains_key(vars::DATABASE_URL));
        assert!(!gateway.contains_key(vars::SAGA_DEADLINE_MS));

        let payment = stack.env_for(Service::Payment);
        assert_eq!(payment[vars::PSP_URL], "http://127.0.0.1:8090");
        assert_eq!(payment[vars::OPS_ADDR], "127.0.0.1:9103");

        let psp = stack.env_for(Service::Psp);
        assert_eq!(psp[vars::HTTP_ADDR], "127.0.0.1:8090");
        assert_eq!(psp[vars::OPS_ADDR], "127.0.0.1:9105");
        assert!(!psp.contains_key(vars::KAFKA_BROKERS));

        assert_eq!(stack.gateway_url(), "http://127.0.0.1:8080");
        assert_eq!(stack.psp_url(), "http://127.0.0.1:8090");
        assert_eq!(stack.ops_url(Service::Shipping), "http://127.0.0.1:9104");
        assert_eq!(stack.broker_address(), "127.0.0.1:9092");
        assert_eq!(
            stack.grpc_url(Service::Inventory).as_deref(),
            Some("http://127.0.0.1:50052")
        );
        assert_eq!(stack.grpc_url(Service::Payment), None);
        assert_eq!(
            stack.log_path(Service::Psp),
            Path::new("/tmp/psp-simulator.log")
        );
    }

    #[test]
    fn a_stack_on_a_shared_broker_names_its_topics_and_may_not_kill_it() {
        let mut options = StackOptions::local("/bin", "/tmp");
        options.broker = BrokerChoice::Shared {
            address: "127.0.0.1:39092".to_owned(),
            topic_prefix: "t0123abcd.".to_owned(),
        };
        let mut stack = idle_stack(options);
        stack.installation = None;

        let shipping = stack.env_for(Service::Shipping);
        assert_eq!(shipping[vars::KAFKA_BROKERS], "127.0.0.1:39092");
        assert_eq!(shipping[vars::KAFKA_TOPIC_PREFIX], "t0123abcd.");
        assert!(
            !stack
                .env_for(Service::Gateway)
                .contains_key(vars::KAFKA_TOPIC_PREFIX)
        );
        assert_eq!(stack.broker_address(), "127.0.0.1:39092");
        assert_eq!(stack.topic("order.events"), "t0123abcd.order.events");
        assert!(stack.broker_running());
        let error = stack.kill_broker().expect_err("shared").to_string();
        assert!(error.contains("with_own_broker"), "{error}");

        let own = idle_stack(StackOptions::local("/bin", "/tmp"));
        assert!(
            !own.env_for(Service::Order)
                .contains_key(vars::KAFKA_TOPIC_PREFIX)
        );
        assert_eq!(own.topic("order.events"), "order.events");
    }

    #[test]
    fn a_proxied_broker_is_always_the_stacks_own() {
        let mut options = StackOptions::local("/bin", "/tmp");
        options.broker = BrokerChoice::Shared {
            address: "127.0.0.1:39092".to_owned(),
            topic_prefix: "t0123abcd.".to_owned(),
        };
        assert_eq!(options.with_proxy(Link::Broker).broker, BrokerChoice::Own);
    }

    #[test]
    fn replicas_get_ports_of_their_own_and_clients_get_every_replica() {
        let options = StackOptions::local("/bin", "/tmp").with_replicas(2, 3);
        let stack = idle_stack(options);
        assert_eq!(stack.ports.ops(Replica::new(Service::Order, 1)), 9111);
        assert_eq!(stack.ports.ops(Replica::new(Service::Shipping, 2)), 9124);
        assert_eq!(
            stack
                .grpc_url(Replica::new(Service::Inventory, 2))
                .as_deref(),
            Some("http://127.0.0.1:50072")
        );
        assert_eq!(stack.grpc_url(Replica::new(Service::Payment, 1)), None);

        let second_order = stack.env_for(Replica::new(Service::Order, 1));
        assert_eq!(second_order[vars::GRPC_ADDR], "127.0.0.1:50061");
        assert_eq!(second_order[vars::OPS_ADDR], "127.0.0.1:9111");
        assert_eq!(
            second_order[vars::INVENTORY_URL],
            "http://127.0.0.1:50052,http://127.0.0.1:50062,http://127.0.0.1:50072"
        );
        let gateway = stack.env_for(Service::Gateway);
        assert_eq!(
            gateway[vars::ORDER_URL],
            "http://127.0.0.1:50051,http://127.0.0.1:50061,http://127.0.0.1:50071"
        );
        assert_eq!(gateway[vars::OPS_ADDR], "127.0.0.1:9100");
        assert_eq!(second_order[vars::KAFKA_TOPIC_PARTITIONS], "3");
        let ten = idle_stack(StackOptions::local("/bin", "/tmp").with_replicas(1, 10));
        assert_eq!(
            ten.env_for(Service::Shipping)[vars::KAFKA_TOPIC_PARTITIONS],
            "10"
        );
        assert_eq!(
            stack.log_path(Replica::new(Service::Payment, 1)),
            Path::new("/tmp/payment-1.log")
        );
        assert_eq!(
            stack.log_path(Service::Payment),
            Path::new("/tmp/payment.log")
        );
    }

    #[test]
    fn one_gateway_and_one_psp_whatever_the_replica_count() {
        let replicas = all_replicas(2);
        let count = |service| replicas.iter().filter(|r| r.service == service).count();
        assert_eq!(count(Service::Gateway), 1);
        assert_eq!(count(Service::Psp), 1);
        for service in Service::REPLICATED {
            assert_eq!(count(service), 2, "{service}");
        }
        assert_eq!(Replica::new(Service::Order, 0).to_string(), "order");
        assert_eq!(Replica::new(Service::Order, 1).to_string(), "order-1");
    }

    #[test]
    fn free_ports_are_all_different() {
        let ports = PortMap::free(2).expect("free ports");
        let mut all: Vec<u16> = ports.describe().into_iter().map(|(_, port)| port).collect();
        all.sort_unstable();
        all.dedup();
        // Gateway, PSP, broker and its controller; ops of 2 + 4 x 2
        // processes; gRPC of 2 replicas of order and inventory.
        assert_eq!(all.len(), 4 + 10 + 4);
    }

    #[test]
    fn test_prefixes_are_random_and_marked_as_test_databases() {
        let a = test_database_prefix();
        let b = test_database_prefix();
        assert_ne!(a, b);
        assert!(a.starts_with(TEST_DATABASE_PREFIX));
        assert_eq!(a.len(), TEST_DATABASE_PREFIX.len() + 8);
    }

    #[tokio::test]
    async fn missing_binaries_are_reported_with_the_fix() {
        let mut options = StackOptions::for_tests().expect("options");
        options.bin_dir = std::env::temp_dir().join("shipshape-no-binaries-here");
        let error = Stack::start(options).await.err().expect("no binaries");
        let message = format!("{error:#}");
        assert!(message.contains("shipshape-gateway"), "{message}");
        assert!(message.contains("cargo xtask test"), "{message}");
    }

    /// Set in the copy of [`a_test_binary_finds_the_profile_directory`]
    /// that runs without [`BIN_DIR_VAR`].
    const PROFILE_PROBE_VAR: &str = "SHIPSHAPE_TESTKIT_PROFILE_PROBE";

    /// `cargo xtask test` sets [`BIN_DIR_VAR`], which bypasses the lookup
    /// from the test binary's path, so the lookup runs in a copy of this
    /// test started without it: the test checks both branches wherever it
    /// runs, and there is no environment it passes in without checking.
    #[test]
    fn a_test_binary_finds_the_profile_directory() {
        let exe = std::env::current_exe().expect("the test binary's path");
        if std::env::var_os(PROFILE_PROBE_VAR).is_some() {
            // The copy: `<profile>/deps/<this binary>` gives `<profile>`.
            assert!(std::env::var_os(BIN_DIR_VAR).is_none());
            let dir = default_bin_dir().expect("bin dir");
            assert!(!dir.ends_with("deps"), "{}", dir.display());
            let name = exe.file_name().expect("the test binary's file name");
            assert_eq!(dir.join("deps").join(name), exe, "{}", dir.display());
        } else {
            // The variable wins when it is set.
            if let Some(set) = std::env::var_os(BIN_DIR_VAR) {
                assert_eq!(default_bin_dir().expect("bin dir"), PathBuf::from(set));
            }
            let module = module_path!();
            let name = module.split_once("::").map_or(module, |(_, path)| path);
            let name = format!("{name}::a_test_binary_finds_the_profile_directory");
            let output = Command::new(&exe)
                .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
                .env_remove(BIN_DIR_VAR)
                .env(PROFILE_PROBE_VAR, "1")
                .output()
                .expect("running the test binary again");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success(),
                "the copy without {BIN_DIR_VAR} failed:\n{stdout}\n{stderr}"
            );
            // A filter that matched nothing would pass with 0 tests run.
            assert!(
                stdout.contains("1 passed"),
                "the copy did not run {name}:\n{stdout}\n{stderr}"
            );
        }
    }
}
