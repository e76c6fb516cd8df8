//! What a service runs of its own beside the parts every service shares: its
//! gRPC API and its background tasks. A service declares them on a
//! [`Wiring`] while it is built; the process then runs them with the rest
//! until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Tasks;
use crate::grpc::{GrpcApi, ServerSettings};
use crate::grpc_tls::{CallerPolicy, TlsFiles};

/// A service's own servers and tasks, collected while it is built, on its
/// connected and migrated database.
pub struct Wiring {
    pool: PgPool,
    ops_addr: SocketAddr,
    shutdown: CancellationToken,
    grpc: ServerSettings,
    grpc_addr: Option<SocketAddr>,
    tasks: Tasks,
}

impl Wiring {
    /// Wiring for a service whose database is `pool` and whose ops server
    /// is bound to `ops_addr`; its tasks stop on `shutdown`. Its gRPC
    /// server runs with `grpc`.
    pub fn new(
        pool: PgPool,
        ops_addr: SocketAddr,
        grpc: ServerSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            pool,
            ops_addr,
            shutdown,
            grpc,
            grpc_addr: None,
            tasks: Tasks::new(),
        }
    }

    /// The service's database, migrated.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The address the ops server is bound to.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// The process's shutdown signal, for the service's own tasks to watch.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Binds `addr` and, once the process runs, serves `api` there as
    /// [`crate::grpc::serve`] does (metrics, tracing, health, reflection
    /// unless it is switched off, connections of a bounded age, and with
    /// TLS only to the callers `callers` allows).
    /// Returns the bound address: `addr` itself, unless its port was 0.
    /// A process serves one gRPC API; a second one is refused.
    pub async fn serve_grpc<S: GrpcApi>(
        &mut self,
        addr: SocketAddr,
        api: S,
        callers: CallerPolicy,
    ) -> anyhow::Result<SocketAddr> {
        if let Some(serving) = self.grpc_addr {
            anyhow::bail!("a gRPC API is already served on {serving}; a process serves one");
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the gRPC server to {addr}"))?;
        let bound = listener.local_addr()?;
        let server = crate::grpc::serve(
            listener,
            api,
            shipshape_proto::FILE_DESCRIPTOR_SET,
            self.grpc.clone(),
            callers,
            self.shutdown.clone(),
        );
        self.add_task("grpc server", server);
        self.grpc_addr = Some(bound);
        Ok(bound)
    }

    /// The TLS files this process's gRPC server presents, which its own
    /// gRPC clients present too.
    pub fn grpc_tls(&self) -> Option<&TlsFiles> {
        self.grpc.tls.as_ref()
    }

    /// Adds `task` to what runs beside the servers once the process runs.
    /// It must end only when the shutdown signal comes (see [`Tasks::run`]).
    pub fn add_task(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks = std::mem::take(&mut self.tasks).add(name, task);
    }

    /// Where the gRPC API is bound, if the service serves one.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The servers and tasks declared, to run with the shared ones.
    pub fn into_tasks(self) -> Tasks {
        self.tasks
    }
}
