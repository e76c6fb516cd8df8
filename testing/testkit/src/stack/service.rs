//! The stack's processes: each [`Service`], its replicas ([`Replica`]),
//! and what each is called and listens on by default.

use std::fmt;

#[cfg(doc)]
use super::StackOptions;

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
    pub(super) const START_ORDER: [Service; 6] = [
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

    /// The process whose [`Service::name`] is `name`.
    pub fn named(name: &str) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == name)
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

/// Every process of a stack with `replicas` replicas of each replicated
/// service, in [`Service::ALL`] order.
pub(super) fn all_replicas(replicas: usize) -> Vec<Replica> {
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
