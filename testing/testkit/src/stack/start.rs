//! Starting a stack: checking what it needs, starting its broker and its
//! processes, and waiting until each one is ready.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use shipshape_faultproxy::FaultProxy;
use shipshape_kafka::{Connection, Deployment, Login, Password, TopicLayout};
use shipshape_proto::ROLES;

use super::databases::create_databases;
use super::port_map::PortMap;
use super::{
    BIN_DIR_VAR, BROKER_DATA_DIR, BrokerChoice, Link, PSP_JOURNAL_FILE, Ports, Replica, Service,
    Stack, StackOptions,
};
use crate::broker::{Broker, BrokerConfig, Installation, SHARED_BROKER_VAR};
use crate::pki::Pki;
use crate::postgres;
use crate::process::Process;

/// Lines of a process's log quoted in error messages.
const LOG_TAIL_LINES: usize = 30;

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
        if options.broker_tls && (installation.is_none() || !options.broker_security) {
            bail!(
                "a TLS listener needs a secured broker of the stack's own: use \
                 StackOptions::with_broker_tls and keep broker_security"
            );
        }
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
            broker_admin: None,
            broker_logins: BTreeMap::new(),
            pki: None,
            broker_tls: None,
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
        if stack.options.broker_tls {
            let dir = stack.options.log_dir.join("broker-tls");
            let ca = Pki::ca_only(&dir, "Shipshape broker CA")?;
            stack.broker_tls = Some(ca.broker_tls()?);
        }
        if stack.options.broker == BrokerChoice::Own {
            stack.broker = Some(stack.spawn_broker().await?);
        }
        stack.set_up_broker().await?;
        if stack.options.grpc_tls {
            let dir = stack.options.log_dir.join("tls");
            stack.pki = Some(Pki::create(&dir, "Shipshape development CA")?);
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
    pub(super) async fn spawn_broker(&self) -> anyhow::Result<Broker> {
        let config = BrokerConfig {
            advertised_port: self.broker_port(),
            own_process_group: self.options.own_process_group,
            secured: self.options.broker_security,
            tls: self.broker_tls.clone(),
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

    /// What the stack sets up on the broker: its topics, and each service's
    /// login and grants.
    pub(super) fn deployment(&self) -> anyhow::Result<Deployment> {
        Ok(Deployment {
            prefix: self.topic_prefix().to_owned(),
            layout: TopicLayout {
                partitions: i32::try_from(self.topic_partitions())?,
                replication: 1,
            },
        })
    }

    /// Gives each service of the stack a login of its own on the broker
    /// (with a fresh password), creates the topics and grants each service
    /// what its role needs, as the broker's super user.
    async fn set_up_broker(&mut self) -> anyhow::Result<()> {
        let admin = match (&self.options.broker, &self.broker) {
            (BrokerChoice::Shared { admin, .. }, _) => admin.clone(),
            (BrokerChoice::Own, Some(broker)) => Connection {
                brokers: self.broker_address(),
                ..broker.admin()
            },
            (BrokerChoice::Own, None) => bail!("the stack's broker is not running"),
        };
        if !self.options.broker_security {
            if self.installation.is_none() {
                bail!(
                    "only a broker of the stack's own runs without security: use with_own_broker"
                );
            }
            self.broker_admin = Some(admin);
            return Ok(());
        }
        let deployment = self.deployment()?;
        let mut logins = BTreeMap::new();
        for role in &ROLES {
            let service = Service::named(role.service)
                .with_context(|| format!("no service of the stack plays {}", role.service))?;
            logins.insert(service, deployment.login(role, Password::random()));
        }
        let all: Vec<Login> = logins.values().cloned().collect();
        deployment
            .apply(&admin, &all)
            .await
            .context("setting up the broker: logins, topics, ACLs")?;
        self.broker_admin = Some(admin);
        self.broker_logins = logins;
        Ok(())
    }

    pub(super) fn spawn(&mut self, replica: Replica) -> anyhow::Result<()> {
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
