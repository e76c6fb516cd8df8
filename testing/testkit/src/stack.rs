//! The whole Shipshape stack as local processes: the broker, one database
//! per service and the six binaries, wired through the environment variables
//! each service reads (see [`vars`]).
//!
//! Tests start a stack on free ports with fresh databases
//! ([`StackOptions::for_tests`]) and can kill, stop and restart any service;
//! `cargo xtask up` starts one on the standard ports ([`StackOptions::local`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;

use shipshape_faultproxy::FaultProxy;
use shipshape_kafka::{Connection, Login};

use crate::broker::{Broker, BrokerTls, Installation};
use crate::pki::Pki;
use crate::process::Process;

mod control;
mod databases;
mod options;
mod port_map;
mod service;
mod start;
mod stop;
pub mod vars;
mod wiring;

pub use options::{
    BIN_DIR_VAR, BrokerChoice, Link, Ports, StackOptions, TEST_DATABASE_PREFIX, default_bin_dir,
    test_database_prefix,
};
pub use service::{Replica, Service};

pub(crate) use databases::drop_databases_blocking;

use port_map::PortMap;

/// The own broker's data directory, in the log directory.
const BROKER_DATA_DIR: &str = "broker-data";

/// The PSP simulator's journal, in the log directory.
const PSP_JOURNAL_FILE: &str = "psp-ledger.jsonl";

/// How long a SIGTERMed service has to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

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
    /// A super user's login to the broker, once it runs.
    broker_admin: Option<Connection>,
    /// Each service's own login to the broker, made for this stack.
    broker_logins: BTreeMap<Service, Login>,
    /// The Java runtime and jars the stack's own broker runs on, to start
    /// it again; `None` on a shared broker.
    installation: Option<Installation>,
    /// The development CA and the gRPC peers' certificates, with
    /// [`StackOptions::grpc_tls`].
    pki: Option<Pki>,
    /// What the stack's own broker presents, with
    /// [`StackOptions::broker_tls`]; kept so a restarted broker presents
    /// the same.
    broker_tls: Option<BrokerTls>,
    processes: BTreeMap<Replica, Process>,
    proxies: BTreeMap<Link, FaultProxy>,
}

impl Stack {
    fn process_mut(&mut self, replica: impl Into<Replica>) -> anyhow::Result<&mut Process> {
        let replica = replica.into();
        self.processes
            .get_mut(&replica)
            .ok_or_else(|| anyhow!("{replica} was never started"))
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
}

#[cfg(test)]
mod tests;
