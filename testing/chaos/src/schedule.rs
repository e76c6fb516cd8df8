//! A chaos schedule: the checkout load to drive and the faults to apply
//! while it runs, read from a small TOML file so users can write their own
//! (`testing/chaos/schedules/` has the CI one and the long one).
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

use serde::Serialize;
use shipshape_faultproxy::Fault as NetworkFault;
use shipshape_testkit::stack::{Link, Replica, Service};

mod parse;
mod timeline;
mod validate;

pub use timeline::{Edge, Step};

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

impl Fault {
    /// When it is undone; `None` for an instantaneous fault.
    pub fn end(&self) -> Option<Duration> {
        self.action.duration().map(|lasting| self.at + lasting)
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

impl Schedule {
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
}

#[cfg(test)]
mod tests;
