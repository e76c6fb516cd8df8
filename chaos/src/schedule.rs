//! A chaos schedule: the checkout load to drive and the faults to apply
//! while it runs, read from a small TOML file so users can write their own
//! (`chaos/schedules/` has the CI one and the long one).
//!
//! ```toml
//! name = "example"
//! replicas = 2      # processes of each of order, inventory, payment, shipping
//!
//! [load]
//! rate = 6.0        # checkouts per second, open model
//! orders = 600      # about this many: the load lasts orders / rate seconds
//!
//! [convergence]
//! timeout_secs = 240
//!
//! [[fault]]
//! kind = "kill"               # SIGKILL, restarted after restart_after_secs
//! service = "payment"
//! at_secs = 10
//! restart_after_secs = 3
//! replica = 1                 # which replica (default 0, the first)
//!
//! [[fault]]
//! kind = "scale-out"          # one more replica, kept to the end
//! service = "shipping"
//! at_secs = 15
//!
//! [[fault]]
//! kind = "broker-pause"       # SIGSTOP, SIGCONT after for_secs
//! at_secs = 25
//! for_secs = 3
//!
//! [[fault]]
//! kind = "network"
//! link = "payment->psp"
//! effect = "latency"          # latency (latency_ms), drop, reset, blackhole
//! latency_ms = 800
//! at_secs = 20
//! for_secs = 10
//! ```
//!
//! Parsing checks everything a run would trip over later: unknown names,
//! rates outside 0..=1, a fault after the load ends, and two faults on one
//! target at once (a proxy holds one fault at a time, a stopped process
//! cannot be stopped again).

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use shipshape_faultproxy::Fault as NetworkFault;
use shipshape_testkit::stack::{Link, Replica, Service};

/// The most replicas of a service a schedule may run.
const MAX_REPLICAS: usize = 4;

/// The longest a fault, a delay or an injected latency may last: longer
/// than any saga deadline, short enough that a typo cannot hang a run.
const LONGEST: Duration = Duration::from_secs(600);

/// A validated schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub name: String,
    /// Processes of each of [`Service::REPLICATED`] at the start.
    pub replicas: usize,
    /// Checkouts per second.
    pub rate: f64,
    /// How many checkouts arrive (rate × load duration).
    pub orders: u64,
    /// How long the system may take to go quiet once the load and the
    /// faults are over.
    pub convergence_timeout: Duration,
    /// In the order they were written.
    pub faults: Vec<Fault>,
}

/// One fault: what happens, and when after the load started.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub action: Action,
}

/// What a fault does. Each either lasts a while (and is undone at its end)
/// or is instantaneous ([`Action::KillConnections`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// SIGKILL the process, as a crash would; start it again after `down`.
    Kill { replica: Replica, down: Duration },
    /// SIGTERM the process (a graceful shutdown, as a rolling update does);
    /// start it again after `down`.
    Terminate { replica: Replica, down: Duration },
    /// Start one more replica of the service (scale out); it stays.
    ScaleOut { service: Service },
    /// SIGKILL the broker and start it again on the same data after
    /// `down`: every acknowledged message must survive (`acks=all`).
    BrokerRestart { down: Duration },
    /// Freeze the broker with SIGSTOP (its connections stay open, nothing
    /// answers, as in a long garbage-collection pause) and SIGCONT it after
    /// `lasting`.
    BrokerPause { lasting: Duration },
    /// End every session on the service's database (`pg_terminate_backend`).
    KillConnections { service: Service },
    /// Shape or cut the traffic of one link through its fault proxy.
    Network {
        link: Link,
        effect: NetworkFault,
        lasting: Duration,
    },
    /// Make the payment provider misbehave (its `/admin/faults`).
    Psp {
        faults: PspFaults,
        lasting: Duration,
    },
}

/// The PSP simulator's injectable faults, as its `PUT /admin/faults` takes
/// them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PspFaults {
    /// Added to every answer.
    pub latency_ms: u64,
    /// Share of requests answered 503 without being processed.
    pub error_rate: f64,
    /// Share of requests processed (a capture is charged) whose answer is
    /// never sent: the caller times out not knowing.
    pub lose_response_rate: f64,
}

/// What a lasting fault holds while it lasts; two faults may not hold the
/// same thing at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holds {
    Process(Replica),
    Broker,
    Link(Link),
}

impl Fault {
    /// When it is undone; `None` for an instantaneous fault.
    pub fn end(&self) -> Option<Duration> {
        self.action.duration().map(|lasting| self.at + lasting)
    }

    /// What it holds: the PSP's fault settings live in the PSP process, so
    /// they and a restart of that process exclude each other.
    fn holds(&self) -> Option<Holds> {
        match self.action {
            Action::Kill { replica, .. } | Action::Terminate { replica, .. } => {
                Some(Holds::Process(replica))
            }
            Action::BrokerRestart { .. } | Action::BrokerPause { .. } => Some(Holds::Broker),
            Action::KillConnections { .. } | Action::ScaleOut { .. } => None,
            Action::Network { link, .. } => Some(Holds::Link(link)),
            Action::Psp { .. } => Some(Holds::Process(Service::Psp.into())),
        }
    }
}

impl Action {
    /// How long it lasts; `None` when instantaneous.
    pub fn duration(&self) -> Option<Duration> {
        match *self {
            Action::Kill { down, .. }
            | Action::Terminate { down, .. }
            | Action::BrokerRestart { down, .. } => Some(down),
            Action::KillConnections { .. } | Action::ScaleOut { .. } => None,
            Action::Network { lasting, .. }
            | Action::Psp { lasting, .. }
            | Action::BrokerPause { lasting } => Some(lasting),
        }
    }

    /// The kind's name as a schedule writes it (`kill`, `network`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Kill { .. } => "kill",
            Action::Terminate { .. } => "terminate",
            Action::ScaleOut { .. } => "scale-out",
            Action::BrokerRestart { .. } => "broker-restart",
            Action::BrokerPause { .. } => "broker-pause",
            Action::KillConnections { .. } => "kill-connections",
            Action::Network { .. } => "network",
            Action::Psp { .. } => "psp",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| format!("{} s", d.as_secs_f64());
        match self {
            Action::Kill { replica, down } => {
                write!(f, "SIGKILL {replica}, restart after {}", secs(down))
            }
            Action::Terminate { replica, down } => {
                write!(f, "SIGTERM {replica}, restart after {}", secs(down))
            }
            Action::ScaleOut { service } => write!(f, "one more {service} replica"),
            Action::BrokerRestart { down } => {
                write!(f, "SIGKILL the broker, restart after {}", secs(down))
            }
            Action::BrokerPause { lasting } => {
                write!(f, "SIGSTOP the broker, SIGCONT after {}", secs(lasting))
            }
            Action::KillConnections { service } => {
                write!(f, "pg_terminate_backend on {service}'s database")
            }
            Action::Network {
                link,
                effect,
                lasting,
            } => write!(
                f,
                "{} on {} for {}",
                describe_effect(*effect),
                link_name(*link),
                secs(lasting)
            ),
            Action::Psp { faults, lasting } => write!(
                f,
                "PSP latency {} ms, error rate {}, lost answers {} for {}",
                faults.latency_ms,
                faults.error_rate,
                faults.lose_response_rate,
                secs(lasting)
            ),
        }
    }
}

fn describe_effect(effect: NetworkFault) -> String {
    match effect {
        NetworkFault::None => "no fault".to_owned(),
        NetworkFault::Latency(delay) => format!("{} ms latency", delay.as_millis()),
        NetworkFault::Drop => "dropped connections".to_owned(),
        NetworkFault::Reset => "reset connections".to_owned(),
        NetworkFault::Blackhole => "blackhole".to_owned(),
    }
}

/// Every link a schedule can name, by its name.
pub const LINKS: [(&str, Link); 9] = [
    ("broker", Link::Broker),
    ("gateway->order", Link::GatewayToOrder),
    ("gateway->inventory", Link::GatewayToInventory),
    ("order->inventory", Link::OrderToInventory),
    ("payment->psp", Link::PaymentToPsp),
    ("order-db", Link::Database(Service::Order)),
    ("inventory-db", Link::Database(Service::Inventory)),
    ("payment-db", Link::Database(Service::Payment)),
    ("shipping-db", Link::Database(Service::Shipping)),
];

/// A link's name in a schedule.
pub fn link_name(link: Link) -> &'static str {
    LINKS
        .iter()
        .find(|(_, known)| *known == link)
        .map_or("an unnamed link", |(name, _)| name)
}

fn parse_link(name: &str) -> anyhow::Result<Link> {
    LINKS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, link)| *link)
        .with_context(|| {
            let names: Vec<&str> = LINKS.iter().map(|(name, _)| *name).collect();
            format!("unknown link `{name}`; links are {}", names.join(", "))
        })
}

fn parse_service(name: &str) -> anyhow::Result<Service> {
    if name == "psp" {
        return Ok(Service::Psp);
    }
    Service::ALL
        .into_iter()
        .find(|service| service.name() == name)
        .with_context(|| {
            let names: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
            format!(
                "unknown service `{name}`; services are {}",
                names.join(", ")
            )
        })
}

fn one() -> usize {
    1
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    #[serde(default = "one")]
    replicas: usize,
    load: LoadSpec,
    #[serde(default)]
    convergence: ConvergenceSpec,
    #[serde(default, rename = "fault")]
    faults: Vec<FaultSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadSpec {
    rate: f64,
    orders: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvergenceSpec {
    timeout_secs: f64,
}

impl Default for ConvergenceSpec {
    fn default() -> Self {
        Self {
            timeout_secs: 300.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum FaultSpec {
    Kill {
        at_secs: f64,
        service: String,
        restart_after_secs: f64,
        #[serde(default)]
        replica: usize,
    },
    Terminate {
        at_secs: f64,
        service: String,
        restart_after_secs: f64,
        #[serde(default)]
        replica: usize,
    },
    ScaleOut {
        at_secs: f64,
        service: String,
    },
    BrokerRestart {
        at_secs: f64,
        down_secs: f64,
    },
    BrokerPause {
        at_secs: f64,
        for_secs: f64,
    },
    KillConnections {
        at_secs: f64,
        database: String,
    },
    Network {
        at_secs: f64,
        for_secs: f64,
        link: String,
        effect: String,
        latency_ms: Option<u64>,
    },
    Psp {
        at_secs: f64,
        for_secs: f64,
        #[serde(default)]
        latency_ms: u64,
        #[serde(default)]
        error_rate: f64,
        #[serde(default)]
        lose_response_rate: f64,
    },
}

/// Seconds from a schedule as a duration: finite, not negative, at most
/// [`LONGEST`] (or `limit`).
fn seconds(value: f64, what: &str, limit: Duration) -> anyhow::Result<Duration> {
    if !value.is_finite() || value < 0.0 {
        bail!("{what} must be a number of seconds ≥ 0, not {value}");
    }
    let duration = Duration::from_secs_f64(value);
    if duration > limit {
        bail!("{what} is {value} s; at most {} s", limit.as_secs_f64());
    }
    Ok(duration)
}

fn positive_seconds(value: f64, what: &str) -> anyhow::Result<Duration> {
    let duration = seconds(value, what, LONGEST)?;
    if duration.is_zero() {
        bail!("{what} must be more than 0 s");
    }
    Ok(duration)
}

fn share(value: f64, what: &str) -> anyhow::Result<f64> {
    if !(0.0..=1.0).contains(&value) {
        bail!("{what} must be between 0 and 1, not {value}");
    }
    Ok(value)
}

fn latency(ms: u64, what: &str) -> anyhow::Result<Duration> {
    let latency = Duration::from_millis(ms);
    if latency > Duration::from_secs(60) {
        bail!("{what} is {ms} ms; at most 60000 ms");
    }
    Ok(latency)
}

/// Replica `index` of the service named `name`, which must be one of the
/// `replicas` the run starts.
fn parse_replica(name: &str, index: usize, replicas: usize) -> anyhow::Result<Replica> {
    let service = parse_service(name)?;
    let count = if Service::REPLICATED.contains(&service) {
        replicas
    } else {
        1
    };
    if index >= count {
        bail!(
            "replica = {index}, but the run starts {count} {service} replica(s), numbered from 0"
        );
    }
    Ok(Replica::new(service, index))
}

impl FaultSpec {
    fn validate(self, load: Duration, replicas: usize) -> anyhow::Result<Fault> {
        let starts = |at_secs: f64| seconds(at_secs, "at_secs", load);
        let (at, action) = match self {
            FaultSpec::Kill {
                at_secs,
                service,
                restart_after_secs,
                replica,
            } => (
                starts(at_secs)?,
                Action::Kill {
                    replica: parse_replica(&service, replica, replicas)?,
                    down: positive_seconds(restart_after_secs, "restart_after_secs")?,
                },
            ),
            FaultSpec::Terminate {
                at_secs,
                service,
                restart_after_secs,
                replica,
            } => (
                starts(at_secs)?,
                Action::Terminate {
                    replica: parse_replica(&service, replica, replicas)?,
                    down: positive_seconds(restart_after_secs, "restart_after_secs")?,
                },
            ),
            FaultSpec::ScaleOut { at_secs, service } => {
                let service = parse_service(&service)?;
                if !Service::REPLICATED.contains(&service) {
                    bail!("only order, inventory, payment and shipping scale out, not {service}");
                }
                (starts(at_secs)?, Action::ScaleOut { service })
            }
            FaultSpec::BrokerRestart { at_secs, down_secs } => (
                starts(at_secs)?,
                Action::BrokerRestart {
                    down: positive_seconds(down_secs, "down_secs")?,
                },
            ),
            FaultSpec::BrokerPause { at_secs, for_secs } => (
                starts(at_secs)?,
                Action::BrokerPause {
                    lasting: positive_seconds(for_secs, "for_secs")?,
                },
            ),
            FaultSpec::KillConnections { at_secs, database } => {
                let service = parse_service(&database)?;
                if !service.owns_database() {
                    bail!("{service} has no database");
                }
                (starts(at_secs)?, Action::KillConnections { service })
            }
            FaultSpec::Network {
                at_secs,
                for_secs,
                link,
                effect,
                latency_ms,
            } => {
                let effect = match (effect.as_str(), latency_ms) {
                    ("latency", Some(ms)) if ms > 0 => {
                        NetworkFault::Latency(latency(ms, "latency_ms")?)
                    }
                    ("latency", _) => bail!("effect = \"latency\" needs latency_ms > 0"),
                    (_, Some(_)) => bail!("latency_ms only goes with effect = \"latency\""),
                    ("drop", None) => NetworkFault::Drop,
                    ("reset", None) => NetworkFault::Reset,
                    ("blackhole", None) => NetworkFault::Blackhole,
                    (other, None) => bail!(
                        "unknown effect `{other}`; effects are latency, drop, reset, blackhole"
                    ),
                };
                (
                    starts(at_secs)?,
                    Action::Network {
                        link: parse_link(&link)?,
                        effect,
                        lasting: positive_seconds(for_secs, "for_secs")?,
                    },
                )
            }
            FaultSpec::Psp {
                at_secs,
                for_secs,
                latency_ms,
                error_rate,
                lose_response_rate,
            } => {
                let faults = PspFaults {
                    latency_ms: latency(latency_ms, "latency_ms")?.as_millis() as u64,
                    error_rate: share(error_rate, "error_rate")?,
                    lose_response_rate: share(lose_response_rate, "lose_response_rate")?,
                };
                if faults == PspFaults::default() {
                    bail!("a psp fault needs latency_ms, error_rate or lose_response_rate");
                }
                (
                    starts(at_secs)?,
                    Action::Psp {
                        faults,
                        lasting: positive_seconds(for_secs, "for_secs")?,
                    },
                )
            }
        };
        Ok(Fault { at, action })
    }
}

impl Schedule {
    /// Parses and validates a schedule; `default_name` names it when the
    /// file does not (its file name, say).
    pub fn parse(text: &str, default_name: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text).context("reading the schedule")?;
        let rate = file.load.rate;
        if !rate.is_finite() || rate <= 0.0 || rate > 1000.0 {
            bail!("load.rate must be more than 0 and at most 1000 checkouts/s, not {rate}");
        }
        if file.load.orders == 0 {
            bail!("load.orders must be at least 1");
        }
        if !(1..=MAX_REPLICAS).contains(&file.replicas) {
            bail!(
                "replicas must be from 1 to {MAX_REPLICAS}, not {}",
                file.replicas
            );
        }
        let schedule = Self {
            name: file.name.unwrap_or_else(|| default_name.to_owned()),
            replicas: file.replicas,
            rate,
            orders: file.load.orders,
            convergence_timeout: positive_seconds(
                file.convergence.timeout_secs,
                "convergence.timeout_secs",
            )?,
            faults: Vec::new(),
        };
        let load = schedule.load_duration();
        let faults = file
            .faults
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                spec.validate(load, file.replicas)
                    .with_context(|| format!("fault #{} in the schedule", index + 1))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        check_overlaps(&faults)?;
        let schedule = Self { faults, ..schedule };
        if schedule.max_replicas() > MAX_REPLICAS {
            bail!(
                "scale-out faults take a service to {} replicas; at most {MAX_REPLICAS}",
                schedule.max_replicas()
            );
        }
        schedule.check_proxies_fit_replicas()?;
        Ok(schedule)
    }

    /// Reads and validates the schedule in `path`.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the schedule {}", path.display()))?;
        let name = path
            .file_stem()
            .map_or_else(|| "schedule".into(), |stem| stem.to_string_lossy());
        Self::parse(&text, &name).with_context(|| format!("in {}", path.display()))
    }

    /// How long checkouts arrive for.
    pub fn load_duration(&self) -> Duration {
        Duration::from_secs_f64(self.orders as f64 / self.rate)
    }

    /// The links a run must route through a fault proxy.
    pub fn links(&self) -> Vec<Link> {
        let mut links: Vec<Link> = self
            .faults
            .iter()
            .filter_map(|fault| match fault.action {
                Action::Network { link, .. } => Some(link),
                _ => None,
            })
            .collect();
        links.sort();
        links.dedup();
        links
    }

    /// Fails when a network fault is on a gRPC link while some service runs
    /// several replicas: the stack refuses that (a proxy forwards to one
    /// process), and it should be refused before anything starts.
    fn check_proxies_fit_replicas(&self) -> anyhow::Result<()> {
        if self.max_replicas() == 1 {
            return Ok(());
        }
        let grpc = [
            Link::GatewayToOrder,
            Link::GatewayToInventory,
            Link::OrderToInventory,
        ];
        if let Some(link) = self.links().into_iter().find(|link| grpc.contains(link)) {
            bail!(
                "a network fault on {} needs one replica of each service (a proxy forwards to \
                 one process), but this run has up to {}",
                link_name(link),
                self.max_replicas()
            );
        }
        Ok(())
    }

    /// The most replicas of any service the run has at once: those it
    /// starts and those it adds.
    pub fn max_replicas(&self) -> usize {
        let added = Service::REPLICATED.iter().map(|&service| {
            self.faults
                .iter()
                .filter(|f| matches!(f.action, Action::ScaleOut { service: s } if s == service))
                .count()
        });
        self.replicas + added.max().unwrap_or(0)
    }

    /// The kinds of fault it applies, each once, in a fixed order.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<&'static str> = self.faults.iter().map(|f| f.action.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }

    /// Every start and end of a fault, in the order they happen. At the
    /// same instant, ends come before starts, so a fault may start on a
    /// target just as another one there ends.
    pub fn timeline(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self
            .faults
            .iter()
            .enumerate()
            .flat_map(|(fault, f)| {
                let begin = Step {
                    at: f.at,
                    fault,
                    edge: Edge::Begin,
                };
                let end = f.end().map(|at| Step {
                    at,
                    fault,
                    edge: Edge::End,
                });
                std::iter::once(begin).chain(end)
            })
            .collect();
        steps.sort_by_key(|step| (step.at, step.edge, step.fault));
        steps
    }
}

/// Fails when two faults hold one target at overlapping times.
fn check_overlaps(faults: &[Fault]) -> anyhow::Result<()> {
    for (i, a) in faults.iter().enumerate() {
        for (j, b) in faults.iter().enumerate().skip(i + 1) {
            let (Some(held), Some(a_end), Some(b_end)) = (a.holds(), a.end(), b.end()) else {
                continue;
            };
            if Some(held) == b.holds() && a.at < b_end && b.at < a_end {
                bail!(
                    "faults #{} ({}) and #{} ({}) overlap on the same target; one fault \
                     holds a process, the broker, a link or the PSP at a time",
                    i + 1,
                    a.action,
                    j + 1,
                    b.action
                );
            }
        }
    }
    Ok(())
}

/// Whether a step applies a fault or undoes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Edge {
    End,
    Begin,
}

/// One moment of the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// After the load started.
    pub at: Duration,
    /// Index into [`Schedule::faults`].
    pub fault: usize,
    pub edge: Edge,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOAD: &str = "[load]\nrate = 5.0\norders = 500\n";

    fn parse(faults: &str) -> anyhow::Result<Schedule> {
        Schedule::parse(&format!("{LOAD}{faults}"), "test")
    }

    fn error(faults: &str) -> String {
        format!("{:#}", parse(faults).expect_err("the schedule is refused"))
    }

    #[test]
    fn reads_every_kind_of_fault() {
        let schedule = parse(
            r#"
[[fault]]
kind = "kill"
service = "psp"
at_secs = 5
restart_after_secs = 2.5
[[fault]]
kind = "terminate"
service = "order"
at_secs = 6
restart_after_secs = 1
[[fault]]
kind = "broker-restart"
at_secs = 10
down_secs = 4
[[fault]]
kind = "kill-connections"
database = "inventory"
at_secs = 12
[[fault]]
kind = "network"
link = "payment-db"
effect = "blackhole"
at_secs = 20
for_secs = 3
[[fault]]
kind = "network"
link = "order->inventory"
effect = "latency"
latency_ms = 300
at_secs = 20
for_secs = 3
[[fault]]
kind = "psp"
at_secs = 30
for_secs = 10
error_rate = 0.2
lose_response_rate = 0.1
"#,
        )
        .expect("a valid schedule");
        assert_eq!(schedule.name, "test");
        assert_eq!(schedule.load_duration(), Duration::from_secs(100));
        assert_eq!(schedule.convergence_timeout, Duration::from_secs(300));
        let actions: Vec<&Action> = schedule.faults.iter().map(|f| &f.action).collect();
        assert_eq!(
            actions,
            [
                &Action::Kill {
                    replica: Service::Psp.into(),
                    down: Duration::from_millis(2500)
                },
                &Action::Terminate {
                    replica: Service::Order.into(),
                    down: Duration::from_secs(1)
                },
                &Action::BrokerRestart {
                    down: Duration::from_secs(4)
                },
                &Action::KillConnections {
                    service: Service::Inventory
                },
                &Action::Network {
                    link: Link::Database(Service::Payment),
                    effect: NetworkFault::Blackhole,
                    lasting: Duration::from_secs(3)
                },
                &Action::Network {
                    link: Link::OrderToInventory,
                    effect: NetworkFault::Latency(Duration::from_millis(300)),
                    lasting: Duration::from_secs(3)
                },
                &Action::Psp {
                    faults: PspFaults {
                        latency_ms: 0,
                        error_rate: 0.2,
                        lose_response_rate: 0.1
                    },
                    lasting: Duration::from_secs(10)
                },
            ]
        );
        assert_eq!(
            schedule.links(),
            [Link::OrderToInventory, Link::Database(Service::Payment)]
        );
        assert_eq!(
            schedule.kinds(),
            [
                "broker-restart",
                "kill",
                "kill-connections",
                "network",
                "psp",
                "terminate"
            ]
        );
    }

    #[test]
    fn the_timeline_ends_a_fault_before_starting_the_next_on_the_same_instant() {
        let schedule = parse(
            r#"
[[fault]]
kind = "network"
link = "broker"
effect = "drop"
at_secs = 20
for_secs = 5
[[fault]]
kind = "network"
link = "broker"
effect = "blackhole"
at_secs = 10
for_secs = 10
[[fault]]
kind = "kill-connections"
database = "order"
at_secs = 15
"#,
        )
        .expect("adjacent faults on one link are fine");
        let steps: Vec<(u64, usize, Edge)> = schedule
            .timeline()
            .iter()
            .map(|s| (s.at.as_secs(), s.fault, s.edge))
            .collect();
        assert_eq!(
            steps,
            [
                (10, 1, Edge::Begin),
                (15, 2, Edge::Begin),
                (20, 1, Edge::End),
                (20, 0, Edge::Begin),
                (25, 0, Edge::End),
            ]
        );
    }

    #[test]
    fn refuses_overlapping_faults_on_one_target() {
        let overlap = error(
            r#"
[[fault]]
kind = "kill"
service = "payment"
at_secs = 10
restart_after_secs = 5
[[fault]]
kind = "terminate"
service = "payment"
at_secs = 12
restart_after_secs = 1
"#,
        );
        assert!(
            overlap.contains("#1") && overlap.contains("#2"),
            "{overlap}"
        );
        let psp = error(
            r#"
[[fault]]
kind = "psp"
at_secs = 10
for_secs = 5
latency_ms = 100
[[fault]]
kind = "kill"
service = "psp-simulator"
at_secs = 14
restart_after_secs = 1
"#,
        );
        assert!(psp.contains("overlap"), "{psp}");
    }

    #[test]
    fn replicas_are_killed_one_by_one_and_scale_out_counts_toward_the_ports() {
        let schedule = Schedule::parse(
            r#"
replicas = 2
[load]
rate = 5.0
orders = 500

[[fault]]
kind = "kill"
service = "inventory"
replica = 1
at_secs = 10
restart_after_secs = 5

[[fault]]
kind = "terminate"
service = "inventory"
at_secs = 12
restart_after_secs = 5

[[fault]]
kind = "scale-out"
service = "shipping"
at_secs = 20

[[fault]]
kind = "scale-out"
service = "shipping"
at_secs = 30

[[fault]]
kind = "broker-pause"
at_secs = 40
for_secs = 3
"#,
            "replicas",
        )
        .expect("two replicas of inventory may be down at once, one by each fault");
        assert_eq!(schedule.replicas, 2);
        assert_eq!(schedule.max_replicas(), 4, "two added to shipping's two");
        assert_eq!(
            schedule.faults[0].action,
            Action::Kill {
                replica: Replica::new(Service::Inventory, 1),
                down: Duration::from_secs(5)
            }
        );
        assert_eq!(schedule.faults[2].end(), None, "a scale-out stays");
        assert_eq!(schedule.faults[4].end(), Some(Duration::from_secs(43)));
        assert!(schedule.kinds().contains(&"broker-pause"));
        let paused_twice = Schedule::parse(
            "[load]\nrate = 5.0\norders = 500\n[[fault]]\nkind = \"broker-pause\"\nat_secs = 1\nfor_secs = 5\n[[fault]]\nkind = \"broker-restart\"\nat_secs = 3\ndown_secs = 1\n",
            "x",
        )
        .expect_err("the broker is held by one fault at a time");
        assert!(format!("{paused_twice:#}").contains("overlap"));
        assert!(
            Schedule::parse("replicas = 9\n[load]\nrate = 5.0\norders = 5\n", "x").is_err(),
            "at most four"
        );
    }

    #[test]
    fn refuses_what_a_run_would_trip_over() {
        let cases = [
            (
                "[[fault]]\nkind = \"kill\"\nservice = \"billing\"\nat_secs = 1\nrestart_after_secs = 1\n",
                "unknown service `billing`",
            ),
            (
                "[[fault]]\nkind = \"kill-connections\"\ndatabase = \"gateway\"\nat_secs = 1\n",
                "gateway has no database",
            ),
            (
                "[[fault]]\nkind = \"network\"\nlink = \"order->payment\"\neffect = \"drop\"\nat_secs = 1\nfor_secs = 1\n",
                "unknown link",
            ),
            (
                "[[fault]]\nkind = \"network\"\nlink = \"broker\"\neffect = \"latency\"\nat_secs = 1\nfor_secs = 1\n",
                "needs latency_ms",
            ),
            (
                "[[fault]]\nkind = \"network\"\nlink = \"broker\"\neffect = \"jitter\"\nat_secs = 1\nfor_secs = 1\n",
                "unknown effect",
            ),
            (
                "[[fault]]\nkind = \"psp\"\nat_secs = 1\nfor_secs = 1\nerror_rate = 1.5\n",
                "between 0 and 1",
            ),
            (
                "[[fault]]\nkind = \"psp\"\nat_secs = 1\nfor_secs = 1\n",
                "needs latency_ms",
            ),
            (
                "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nat_secs = 101\nrestart_after_secs = 1\n",
                "at most 100 s",
            ),
            (
                "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nat_secs = -1\nrestart_after_secs = 1\n",
                "≥ 0",
            ),
            (
                "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nat_secs = 1\nrestart_after_secs = 0\n",
                "more than 0 s",
            ),
            (
                "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nat_secs = 1\nrestart_after = 1\n",
                "unknown field",
            ),
            (
                "[[fault]]\nkind = \"reboot\"\nat_secs = 1\n",
                "unknown variant",
            ),
            (
                "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nreplica = 1\nat_secs = 1\nrestart_after_secs = 1\n",
                "starts 1 order replica(s)",
            ),
            (
                "[[fault]]\nkind = \"scale-out\"\nservice = \"gateway\"\nat_secs = 1\n",
                "only order, inventory, payment and shipping scale out",
            ),
            (
                "[[fault]]\nkind = \"broker-pause\"\nat_secs = 1\nfor_secs = 0\n",
                "more than 0 s",
            ),
            (
                "[[fault]]\nkind = \"scale-out\"\nservice = \"order\"\nat_secs = 1\n[[fault]]\nkind = \"network\"\nlink = \"gateway->order\"\neffect = \"drop\"\nat_secs = 1\nfor_secs = 1\n",
                "needs one replica",
            ),
        ];
        for (faults, expected) in cases {
            let message = error(faults);
            assert!(
                message.contains(expected),
                "{faults}: expected `{expected}` in `{message}`"
            );
        }
        for (load, expected) in [
            (
                "broker = \"memory\"\n[load]\nrate = 5.0\norders = 10\n",
                "unknown field `broker`",
            ),
            ("[load]\nrate = 0.0\norders = 10\n", "load.rate"),
            ("[load]\nrate = 5.0\norders = 0\n", "load.orders"),
            ("[load]\nrate = 5.0\n", "missing field `orders`"),
        ] {
            let message = format!("{:#}", Schedule::parse(load, "x").expect_err(load));
            assert!(message.contains(expected), "{load}: {message}");
        }
    }

    #[test]
    fn describes_each_fault_for_the_report() {
        let blackhole = Action::Network {
            link: Link::Database(Service::Shipping),
            effect: NetworkFault::Blackhole,
            lasting: Duration::from_secs(4),
        };
        assert_eq!(blackhole.to_string(), "blackhole on shipping-db for 4 s");
        let kill = Action::Kill {
            replica: Service::Psp.into(),
            down: Duration::from_millis(1500),
        };
        assert_eq!(
            kill.to_string(),
            "SIGKILL psp-simulator, restart after 1.5 s"
        );
    }
}
