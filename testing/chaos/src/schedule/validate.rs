//! The checks across faults: no two faults hold one target at once, and
//! network faults on gRPC links only where every service runs one replica.

use anyhow::bail;
use shipshape_testkit::stack::{Link, Replica, Service};

use super::{Action, Fault, Schedule, link_name};

/// What a lasting fault holds while it lasts; two faults may not hold the
/// same thing at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holds {
    Process(Replica),
    Broker,
    Link(Link),
}

impl Fault {
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

impl Schedule {
    /// Fails when a network fault is on a gRPC link while some service runs
    /// several replicas: the stack refuses that (a proxy forwards to one
    /// process), and it should be refused before anything starts.
    pub(super) fn check_proxies_fit_replicas(&self) -> anyhow::Result<()> {
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
}

/// Fails when two faults hold one target at overlapping times.
pub(super) fn check_overlaps(faults: &[Fault]) -> anyhow::Result<()> {
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
