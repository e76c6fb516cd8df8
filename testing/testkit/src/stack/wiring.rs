//! How the parts of a stack find each other, and how a test reaches them:
//! the ports and URLs of each part, direct or through a fault proxy, the
//! environment each process is started with, and tokens for the gateway.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use shipshape_kafka::Connection;
use tonic::transport::{Channel, Endpoint};

use super::{BrokerChoice, Link, PSP_JOURNAL_FILE, Replica, Service, Stack, vars};
use crate::pki::{GRPC_PEERS, Pki};
use crate::{auth, postgres};

/// The consumer-group session timeout every service gets: short (Kafka's
/// default is 45 s), so the broker gives up on a SIGKILLed consumer and
/// moves its partitions on within seconds.
const KAFKA_SESSION_TIMEOUT_MS: &str = "6000";

/// The fewest partitions a stack's topics get (the services' own default);
/// a stack that may scale beyond it gets one partition per replica, so no
/// replica idles.
const MIN_TOPIC_PARTITIONS: usize = 3;

impl Stack {
    /// The `host:port` a link's proxy forwards to.
    pub(super) fn link_upstream(&self, link: Link) -> anyhow::Result<String> {
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

    /// URLs of every port of `link`, comma-separated, as the services read
    /// a list of replicas: `https://` on a gRPC link over TLS.
    fn urls_for(&self, link: Link) -> String {
        let scheme = match link {
            Link::GatewayToOrder | Link::GatewayToInventory | Link::OrderToInventory => {
                self.grpc_scheme()
            }
            Link::Broker | Link::PaymentToPsp | Link::Database(_) => "http",
        };
        self.ports_for(link)
            .iter()
            .map(|port| format!("{scheme}://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn grpc_scheme(&self) -> &'static str {
        if self.pki.is_some() { "https" } else { "http" }
    }

    /// The port Kafka clients connect to.
    pub(super) fn broker_port(&self) -> u16 {
        self.port_for(Link::Broker)
    }

    /// A bearer token the gateway accepts, for customer `subject` with
    /// `scopes` (`["admin"]` for the operators' API), valid for an hour.
    pub fn token(&self, subject: &str, scopes: &[&str]) -> anyhow::Result<String> {
        auth::minter(&self.options.jwt_secret)?.mint(subject, scopes, auth::TOKEN_TTL)
    }

    /// Every process's `/metrics`, as the gateway's operator page reads
    /// them: `order=http://...,order-2=http://...` (a service's first replica
    /// goes by the service's name).
    fn metrics_urls(&self) -> String {
        self.ports
            .ops
            .iter()
            .map(|(replica, port)| {
                let name = match replica.index {
                    0 => replica.service.name().to_owned(),
                    index => format!("{}-{}", replica.service.name(), index + 1),
                };
                format!("{name}=http://127.0.0.1:{port}/metrics")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The environment `replica` is started with.
    pub(super) fn env_for(&self, replica: impl Into<Replica>) -> BTreeMap<String, String> {
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
            if let Some(login) = self.broker_logins.get(&service) {
                let broker = self.broker_admin();
                set(
                    vars::KAFKA_SECURITY_PROTOCOL,
                    broker.protocol.name().to_owned(),
                );
                if let Some(ca) = &broker.ca_location {
                    set(vars::KAFKA_SSL_CA_LOCATION, ca.display().to_string());
                }
                set(vars::KAFKA_SASL_USERNAME, login.username.clone());
                set(
                    vars::KAFKA_SASL_PASSWORD,
                    login.password.expose().to_owned(),
                );
            }
            if let BrokerChoice::Shared { topic_prefix, .. } = &self.options.broker {
                set(vars::KAFKA_TOPIC_PREFIX, topic_prefix.clone());
            }
            set(
                vars::KAFKA_SESSION_TIMEOUT_MS,
                KAFKA_SESSION_TIMEOUT_MS.to_owned(),
            );
            set(
                vars::KAFKA_TOPIC_PARTITIONS,
                self.topic_partitions().to_string(),
            );
        }
        if let Some(pki) = self
            .pki
            .as_ref()
            .filter(|_| GRPC_PEERS.contains(&service.name()))
        {
            let path = |path: PathBuf| path.display().to_string();
            set(
                vars::GRPC_TLS_CERT,
                path(pki.certificate_path(service.name())),
            );
            set(vars::GRPC_TLS_KEY, path(pki.key_path(service.name())));
            set(vars::GRPC_TLS_CA, path(pki.ca_path()));
        }
        match service {
            Service::Gateway => {
                set(vars::HTTP_ADDR, local(p.gateway_http));
                set(vars::JWT_ISSUER, auth::DEV_ISSUER.to_owned());
                set(vars::JWT_AUDIENCE, auth::DEV_AUDIENCE.to_owned());
                set(vars::JWT_HS256_SECRET, self.options.jwt_secret.clone());
                set(vars::ORDER_URL, self.urls_for(Link::GatewayToOrder));
                set(vars::INVENTORY_URL, self.urls_for(Link::GatewayToInventory));
                // The operator page: every process's metrics, and the PSP
                // simulator's faults (loopback, so no admin token).
                set(vars::OPERATOR_METRICS_URLS, self.metrics_urls());
                set(vars::PSP_ADMIN_URL, url(p.psp_http));
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
        Some(format!("{}://127.0.0.1:{port}", self.grpc_scheme()))
    }

    /// A channel to a replica of the order or inventory service that
    /// presents a certificate naming `caller` (issued now by the stack's CA)
    /// when gRPC runs over TLS: a test calls as the gateway, as the order
    /// service, or as a service the server does not let in.
    pub fn grpc_channel(
        &self,
        replica: impl Into<Replica>,
        caller: &str,
    ) -> anyhow::Result<Channel> {
        let replica = replica.into();
        let url = self
            .grpc_url(replica)
            .with_context(|| format!("{replica} serves no gRPC"))?;
        let endpoint = Endpoint::from_shared(url)?;
        let endpoint = match &self.pki {
            Some(pki) => {
                endpoint.tls_config(pki.tls_files(caller)?.client(replica.service.name()))?
            }
            None => endpoint,
        };
        Ok(endpoint.connect_lazy())
    }

    /// The stack's development CA, with [`StackOptions::grpc_tls`].
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
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
            BrokerChoice::Shared { admin, .. } => admin.brokers.clone(),
        }
    }

    /// A login to the broker as its super user, for test clients that read
    /// every topic or write where no service may. (A stack is set up before
    /// [`Stack::start`] returns; only one that never started has none, and
    /// gets a connection without a login.)
    pub fn broker_admin(&self) -> Connection {
        self.broker_admin
            .clone()
            .unwrap_or_else(|| Connection::plaintext(self.broker_address()))
    }

    /// Where the super user's password of the stack's own broker is kept.
    pub fn broker_admin_password_file(&self) -> PathBuf {
        self.options
            .log_dir
            .join(super::BROKER_DATA_DIR)
            .join(crate::broker::ADMIN_PASSWORD_FILE)
    }

    /// `service`'s own login to the broker: what that service may do, and
    /// nothing more.
    pub fn broker_login(&self, service: Service) -> anyhow::Result<Connection> {
        let admin = self.broker_admin();
        let login = self
            .broker_logins
            .get(&service)
            .with_context(|| format!("{service} has no login to the broker"))?;
        Ok(admin.as_login(login.clone()))
    }

    /// Partitions of each topic: enough for every replica to get one.
    pub(super) fn topic_partitions(&self) -> usize {
        self.options.max_replicas.max(MIN_TOPIC_PARTITIONS)
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
}
