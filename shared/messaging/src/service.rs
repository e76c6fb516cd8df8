//! One shape for every event-driven service. A service declares only what
//! is its own in a [`ServiceSpec`]: its name, migrations, topics, event
//! handler, gRPC API and background tasks. [`App`] does the rest the same
//! way for every service: settings → database and migrations → broker →
//! servers → graceful shutdown, and [`main`] is all a service's `main.rs`
//! calls.
//!
//! The shape lives here rather than in `shipshape_runtime`, which has the
//! rest of the process plumbing, because it runs the broker, the consumer
//! and the outbox relay, and the runtime crate must not depend on the
//! messaging crate built on it.
//!
//! [`App::build`] connects and binds, and [`App::run_until_stopped`] serves,
//! so a test binding port 0 learns the ports before it calls the service:
//!
//! ```no_run
//! # use shipshape_messaging::service::{App, ServiceConfig, ServiceSpec};
//! # async fn example<S>(config: ServiceConfig, own: S::Config) -> anyhow::Result<()>
//! # where
//! #     S: ServiceSpec,
//! # {
//! let shutdown = shipshape_runtime::CancellationToken::new();
//! let app = App::<S>::build(config, own, shutdown.clone()).await?;
//! let grpc = app.grpc_addr();
//! let running = tokio::spawn(app.run_until_stopped());
//! // ... call the service on `grpc` ...
//! shutdown.cancel();
//! running.await??;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;

use shipshape_runtime::database::{self, DatabaseConfig};
use shipshape_runtime::grpc::ServerSettings;
use shipshape_runtime::{CancellationToken, Readiness, Tasks, Wiring, config, ops};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use shipshape_proto::Role;

use crate::{Broker, Handler, KafkaSettings};

/// Settings every event-driven service reads from the environment.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub database: DatabaseConfig,
    pub kafka: KafkaSettings,
    /// `OPS_ADDR`: the `/healthz`, `/readyz` and `/metrics` server.
    pub ops_addr: SocketAddr,
    /// `GRPC_REFLECTION` and `GRPC_MAX_CONNECTION_AGE_MS`: how a service's
    /// gRPC server (order's, inventory's) runs.
    pub grpc: ServerSettings,
}

impl ServiceConfig {
    /// `DATABASE_*`, `KAFKA_*`, `CONSUMER_*` and `OPS_ADDR` (default
    /// `default_ops_addr`) for `service`.
    pub fn from_env(service: &str, default_ops_addr: &str) -> anyhow::Result<Self> {
        Ok(Self {
            database: DatabaseConfig::from_env(service)?,
            kafka: KafkaSettings::from_env(service)?,
            ops_addr: config::addr_or("OPS_ADDR", default_ops_addr)?,
            grpc: ServerSettings::from_env()?,
        })
    }
}

/// What one event-driven service is: everything that is its own, and
/// nothing that every service does alike, which [`App`] does.
pub trait ServiceSpec: 'static {
    /// Its name (in logs and traces as `service.name`, and in the
    /// defaults of its database and consumer group), the topic it
    /// publishes on and the topics whose events it handles.
    const ROLE: Role;
    /// Where its ops server listens when `OPS_ADDR` is unset.
    const DEFAULT_OPS_ADDR: &'static str;

    /// Its own settings, beside the [`ServiceConfig`] every service has.
    type Config;
    /// Applies the events of the topics of [`ServiceSpec::ROLE`].
    type Handler: Handler;

    /// Its own tables, migrated after the outbox's and the inbox's.
    fn migrator() -> &'static Migrator;

    /// Reads its own settings from the environment.
    fn config_from_env() -> anyhow::Result<Self::Config>;

    /// Registers the help text of its own metrics, once the process has a
    /// recorder. Most services have none beyond the shared ones.
    fn describe_metrics() {}

    /// Declares its gRPC API and background tasks on `wiring`, whose
    /// database is connected and migrated, and returns its event handler.
    fn wire(
        config: Self::Config,
        wiring: &mut Wiring,
    ) -> impl Future<Output = anyhow::Result<Self::Handler>> + Send;
}

/// Everything a service's `main` does: logs and traces, the metrics
/// recorder, a shutdown on SIGTERM or Ctrl-C, the settings from the
/// environment, then [`App::build`] and [`App::run_until_stopped`]. Spans
/// still buffered are exported before it returns.
pub async fn main<S: ServiceSpec>() -> anyhow::Result<()> {
    let telemetry = shipshape_telemetry::init(S::ROLE.service)?;
    shipshape_runtime::metrics::install();
    S::describe_metrics();
    let shutdown = shipshape_runtime::shutdown::on_signal()?;
    telemetry
        .around(async {
            let config = ServiceConfig::from_env(S::ROLE.service, S::DEFAULT_OPS_ADDR)?;
            let own = S::config_from_env()?;
            App::<S>::build(config, own, shutdown)
                .await?
                .run_until_stopped()
                .await
        })
        .await
}

/// A service connected to its database and the broker, with its servers
/// bound, ready to run.
pub struct App<S: ServiceSpec> {
    pool: PgPool,
    broker: Broker,
    handler: S::Handler,
    ops_listener: TcpListener,
    ops_addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    /// The service's own servers and tasks.
    tasks: Tasks,
    shutdown: CancellationToken,
}

impl<S: ServiceSpec> App<S> {
    /// Connects to the database (waiting for it until `shutdown`), applies
    /// the messaging tables' and the service's migrations, connects to the
    /// broker, creating the service's topics if they are missing, binds the
    /// ops server and has the service declare the rest (see
    /// [`ServiceSpec::wire`]). Nothing is served until
    /// [`App::run_until_stopped`].
    pub async fn build(
        config: ServiceConfig,
        own: S::Config,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let db = &config.database;
        let pool = database::connect(&db.url, db.max_connections, &shutdown).await?;
        database::migrate(&pool, &[&crate::MIGRATOR, S::migrator()]).await?;
        let mut topics = vec![S::ROLE.publishes];
        topics.extend_from_slice(S::ROLE.consumes);
        let broker = Broker::connect(config.kafka, &topics).await?;
        let ops_listener = ops::bind(config.ops_addr).await?;
        let ops_addr = ops_listener.local_addr()?;
        let mut wiring = Wiring::new(pool.clone(), ops_addr, config.grpc, shutdown.clone());
        let handler = S::wire(own, &mut wiring).await?;
        Ok(Self {
            pool,
            broker,
            handler,
            ops_listener,
            ops_addr,
            grpc_addr: wiring.grpc_addr(),
            tasks: wiring.into_tasks(),
            shutdown,
        })
    }

    /// Where the ops server is bound.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// Where the gRPC API is bound, if the service serves one.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// Runs the service until the shutdown signal given to [`App::build`]:
    /// its own servers and tasks, the ops server (ready when the migrations
    /// ran, the database and broker answer and the consumer has joined its
    /// group), the consumer feeding the handler, the outbox relay and the
    /// pool's metrics. The first of them to fail stops the others, and its
    /// error is returned.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            pool,
            broker,
            handler,
            ops_listener,
            tasks,
            shutdown,
            ..
        } = self;
        crate::describe();
        let consumer = broker.consumer(S::ROLE.consumes.to_vec(), handler);
        let readiness = Readiness::new()
            .with_check("migrations", database::migrations_check())
            .with_check("database", database::check(pool.clone()))
            .with_check("broker", broker.check())
            .with_check("consumer group", consumer.membership_check());
        let relay = broker.relay(pool.clone());
        tasks
            .add(
                "ops server",
                ops::serve_on(ops_listener, readiness, shutdown.clone()),
            )
            .add("event consumer", consumer.run(shutdown.clone()))
            .add("outbox relay", relay.run(shutdown.clone()))
            .add(
                "pool metrics",
                database::sample_pool(pool, shutdown.clone()),
            )
            .run(shutdown)
            .await
    }
}
