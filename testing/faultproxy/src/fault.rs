//! What the proxy does to the traffic it carries.

use std::time::Duration;

/// One way the network between two parts can fail. One fault is active at a
/// time; see the crate docs for what each one stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward every byte as soon as it is read.
    #[default]
    None,
    /// Deliver each chunk this long after it was read, in both directions,
    /// in order. The TCP handshake is not delayed: the kernel completes it
    /// before the proxy sees the connection.
    Latency(Duration),
    /// Close every connection gracefully (FIN) and close new ones at once.
    Drop,
    /// Abort every connection (RST), existing and new.
    Reset,
    /// Keep connections open, accept new ones, forward nothing until the
    /// fault changes. Bytes are held, not lost, so a connection that
    /// outlives the blackhole carries on where it stopped.
    Blackhole,
}

impl Fault {
    /// The delay a chunk read now waits before it is written.
    pub(crate) fn delay(self) -> Duration {
        match self {
            Fault::Latency(delay) => delay,
            _ => Duration::ZERO,
        }
    }

    /// Whether this fault ends connections rather than shaping their traffic.
    pub(crate) fn ends_connections(self) -> bool {
        matches!(self, Fault::Drop | Fault::Reset)
    }

    /// Whether this fault stops traffic without ending connections.
    pub(crate) fn holds_traffic(self) -> bool {
        matches!(self, Fault::Blackhole)
    }
}
