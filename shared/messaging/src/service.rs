//! What every event-driven service runs the same way: its database and
//! migrations, its broker connection, the ops server with readiness checks,
//! the event consumer and the outbox relay. A service adds its own tasks
//! (a gRPC server, a sweeper) and its handler.

use std::net::SocketAddr;

use shipshape_runtime::database::{self, DatabaseConfig};
use shipshape_runtime::{CancellationToken, Readiness, Tasks, config, ops};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::{Broker, Handler, KafkaSettings};

/// Settings every event-driven service reads from the environment.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub database: DatabaseConfig,
    pub kafka: KafkaSettings,
    /// `OPS_ADDR`: the `/healthz` and `/readyz` server.
    pub ops_addr: SocketAddr,
}

impl ServiceConfig {
    pub fn from_env(service: &str, default_ops_addr: &str) -> anyhow::Result<Self> {
        Ok(Self {
            database: DatabaseConfig::from_env(service)?,
            kafka: KafkaSettings::from_env(service)?,
            ops_addr: config::addr_or("OPS_ADDR", default_ops_addr)?,
        })
    }
}

/// Connects to the database (waiting for it), applies the messaging tables'
/// and the service's migrations, and connects to the broker, creating
/// `topics` if they are missing.
pub async fn connect(
    config: &ServiceConfig,
    migrator: &Migrator,
    topics: &[&str],
    shutdown: &CancellationToken,
) -> anyhow::Result<(PgPool, Broker)> {
    let db = &config.database;
    let pool = database::connect(&db.url, db.max_connections, shutdown).await?;
    database::migrate(&pool, &[&crate::MIGRATOR, migrator]).await?;
    let broker = Broker::connect(config.kafka.clone(), topics).await?;
    Ok((pool, broker))
}

/// Runs the service until `shutdown`: the ops server (ready when the
/// migrations ran, the database and broker answer and the consumer has
/// joined its group), the consumer of `consumed` topics feeding `handler`,
/// the outbox relay, the pool's metrics, and the service's own `tasks`.
pub async fn run<H: Handler>(
    config: &ServiceConfig,
    pool: PgPool,
    broker: Broker,
    consumed: Vec<&'static str>,
    handler: H,
    tasks: Tasks,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::describe();
    let consumer = broker.consumer(consumed, handler);
    let readiness = Readiness::new()
        .with_check("migrations", database::migrations_check())
        .with_check("database", database::check(pool.clone()))
        .with_check("broker", broker.check())
        .with_check("consumer group", consumer.membership_check());
    let relay = broker.relay(pool.clone());
    tasks
        .add(
            "ops server",
            ops::serve(config.ops_addr, readiness, shutdown.clone()),
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
