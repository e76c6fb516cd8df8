//! The listener: accepts connections and gives each one its own task.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::connection;
use crate::control::{Accepted, FaultControl, Shared};

/// How long the accept loop pauses after a failed accept (typically out of
/// file descriptors), so it does not spin while the cause persists.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Where the proxy forwards to: a socket address or a `host:port` string.
/// A name is resolved again for every connection, so the upstream may move
/// or start after the proxy does; until it listens, clients are reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream(String);

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Self {
        Self(addr.to_string())
    }
}

impl From<&str> for Upstream {
    fn from(host_port: &str) -> Self {
        Self(host_port.to_owned())
    }
}

impl From<String> for Upstream {
    fn from(host_port: String) -> Self {
        Self(host_port)
    }
}

impl Upstream {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running proxy. It stops when dropped or shut down: the listener closes
/// and every connection through it is closed.
#[derive(Debug)]
pub struct FaultProxy {
    control: FaultControl,
    addr: SocketAddr,
    /// Dropping it tells the accept loop to stop.
    stop: oneshot::Sender<()>,
    accept_loop: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (in tests `127.0.0.1:0`) and forwards every
    /// accepted connection to `upstream`, with no fault active.
    ///
    /// Fails only when `listen` cannot be bound; an upstream that is not
    /// listening shows up per connection instead.
    pub async fn start(listen: SocketAddr, upstream: impl Into<Upstream>) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("fault proxy cannot listen on {listen}: {e}"),
            )
        })?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(upstream.into());
        let shared = Arc::new(Shared::new(addr));
        let (stop, stopped) = oneshot::channel();
        tracing::debug!(proxy = %addr, %upstream, "fault proxy listening");
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            upstream,
            Arc::clone(&shared),
            stopped,
        ));
        Ok(Self {
            control: FaultControl::new(shared),
            addr,
            stop,
            accept_loop,
        })
    }

    /// The address clients connect to instead of the upstream.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to change the fault and read the counters; it stays valid
    /// (and harmless) after the proxy stops.
    pub fn control(&self) -> FaultControl {
        self.control.clone()
    }

    /// Stops the proxy and returns once the listener and every connection
    /// are closed, so a test can rely on it when this returns. Dropping the
    /// proxy does the same without waiting.
    pub async fn shutdown(self) {
        let Self {
            stop, accept_loop, ..
        } = self;
        drop(stop);
        if let Err(e) = accept_loop.await {
            tracing::warn!(error = %e, "fault proxy accept loop failed");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<Upstream>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Resolves when the proxy is shut down or dropped.
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let accepted = Accepted::new(Arc::clone(&shared));
                    connections.spawn(connection::serve(client, Arc::clone(&upstream), accepted));
                }
                Err(e) => {
                    tracing::warn!(proxy = %shared.addr, error = %e, "fault proxy cannot accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reaps finished connections so the set does not grow.
            Some(_) = connections.join_next() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
    tracing::debug!(proxy = %shared.addr, "fault proxy stopped");
}
