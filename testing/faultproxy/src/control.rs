//! The handle a test changes the fault through and reads counters from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::Fault;

/// Changes the proxy's fault at runtime and reads its counters. Cheap to
/// clone, so a test can hand one to a task that flips faults while the
/// system under test runs.
#[derive(Debug, Clone)]
pub struct FaultControl {
    shared: Arc<Shared>,
}

/// Counters since the proxy started, so a test can tell that traffic really
/// went through the proxy and that connections were really closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections accepted, including those a fault closed at once.
    pub accepted: u64,
    /// Connections accepted and not yet closed.
    pub open: u64,
    /// Bytes written to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes written back to clients.
    pub bytes_to_client: u64,
}

impl FaultControl {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Makes `fault` the active one. Existing connections react at once;
    /// chunks already delayed by a latency keep their delivery time.
    pub fn set(&self, fault: Fault) {
        let previous = self.shared.fault.send_replace(fault);
        tracing::debug!(proxy = %self.shared.addr, ?previous, ?fault, "fault changed");
    }

    /// Back to plain pass-through.
    pub fn clear(&self) {
        self.set(Fault::None);
    }

    /// The active fault.
    pub fn fault(&self) -> Fault {
        *self.shared.fault.borrow()
    }

    /// The counters as they are now.
    pub fn stats(&self) -> Stats {
        let counters = &self.shared.counters;
        Stats {
            accepted: counters.accepted.load(Ordering::Relaxed),
            open: counters.open.load(Ordering::Relaxed),
            bytes_to_upstream: counters.to_upstream.load(Ordering::Relaxed),
            bytes_to_client: counters.to_client.load(Ordering::Relaxed),
        }
    }
}

/// What the accept loop, every connection and every control handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The proxy's own address, to tell proxies apart in logs.
    pub(crate) addr: SocketAddr,
    /// The active fault; each connection subscribes and reacts to changes.
    pub(crate) fault: watch::Sender<Fault>,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            fault: watch::Sender::new(Fault::None),
            counters: Counters::default(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    pub(crate) to_upstream: AtomicU64,
    pub(crate) to_client: AtomicU64,
}

/// One accepted connection, counted as open until this is dropped, which
/// also happens when its task is aborted at shutdown.
pub(crate) struct Accepted {
    pub(crate) shared: Arc<Shared>,
}

impl Accepted {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        shared.counters.open.fetch_add(1, Ordering::Relaxed);
        Self { shared }
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        self.shared.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}
