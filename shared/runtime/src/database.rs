//! The Postgres pool and migrations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::Backoff;
use crate::ops::CheckFuture;

/// Between attempts to reach a database that is not up yet.
const CONNECT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Connects, retrying while the database is not up yet (a container start
/// race is normal), until the process is asked to shut down.
pub async fn connect(
    url: &str,
    max_connections: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<PgPool> {
    let options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3));
    let mut retries = 0;
    loop {
        match options.clone().connect(url).await {
            Ok(pool) => return Ok(pool),
            Err(error) => {
                retries += 1;
                let delay = CONNECT_BACKOFF.delay(retries);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database not reachable");
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shut down before the database was reachable: {error}"),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The status a gRPC handler answers for a failed query of `database` (a
/// name for messages: "order", "catalog").
///
/// A data exception (SQLSTATE class 22: a value out of range, text that is
/// not a valid number or timestamp) is Postgres judging a value the request
/// carried. The database is healthy and the same request would fail the
/// same way, so it is `INVALID_ARGUMENT`, which the callers' circuit
/// breakers count as a healthy answer and never retry. Anything else means
/// the database could not do its work: `UNAVAILABLE` with the code
/// `database_unavailable`. Handlers map every query error through here, so
/// no caller's input can pass for an outage.
pub fn query_failed(error: &sqlx::Error, database: &str) -> tonic::Status {
    let sqlstate = error.as_database_error().and_then(|e| e.code());
    if sqlstate.is_some_and(|code| code.starts_with(DATA_EXCEPTION_CLASS)) {
        tracing::warn!(%error, database, "a query refused a value of the request");
        return shipshape_proto::error_status(
            tonic::Code::InvalidArgument,
            "invalid_value",
            format!("a value of the request is out of the {database} database's range"),
        );
    }
    tracing::error!(%error, database, "database query failed");
    shipshape_proto::error_status(
        tonic::Code::Unavailable,
        "database_unavailable",
        format!("{database} database unavailable"),
    )
}

/// SQLSTATE class of data exceptions.
const DATA_EXCEPTION_CLASS: &str = "22";

pub const POOL_CONNECTIONS: &str = "shipshape_db_pool_connections";
pub const POOL_MAX_CONNECTIONS: &str = "shipshape_db_pool_max_connections";

/// How often [`sample_pool`] reads the pool's state.
const POOL_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Set once [`migrate`] has applied every migration in this process.
static MIGRATED: AtomicBool = AtomicBool::new(false);

pub(crate) fn describe() {
    metrics::describe_gauge!(
        POOL_CONNECTIONS,
        "Open Postgres connections in the pool, by state: idle or in_use"
    );
    metrics::describe_gauge!(
        POOL_MAX_CONNECTIONS,
        "The most connections the Postgres pool opens"
    );
}

/// The advisory lock key replicas of a service take to migrate one at a
/// time (any constant no other lock of ours uses).
const MIGRATION_LOCK_KEY: i64 = 0x5348_4950_4d49_4752; // "SHIPMIGR"

/// How often a replica asks again for the migration lock another holds.
const MIGRATION_LOCK_POLL: Duration = Duration::from_millis(100);

/// Runs each migrator in turn, one replica at a time: replicas starting
/// together apply each migration once. The migrators share one history
/// table, so each ignores the others' versions.
///
/// The lock is ours, polled with `pg_try_advisory_lock`, not sqlx's: sqlx
/// waits inside `pg_advisory_lock`, a statement that stays open while it
/// waits, and a migration the holder builds `CONCURRENTLY` waits for every
/// open transaction, that statement's too. Postgres breaks that deadlock by
/// failing one replica's start (seen with two order replicas). A replica
/// polling holds no transaction between its tries.
pub async fn migrate(pool: &PgPool, migrators: &[&Migrator]) -> anyhow::Result<()> {
    let mut lock = pool
        .acquire()
        .await
        .context("a connection for the migration lock")?;
    let mut told = false;
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .fetch_one(&mut *lock)
            .await
            .context("taking the migration lock")?;
        if taken {
            break;
        }
        if !told {
            tracing::info!("another replica is migrating the database; waiting for it");
            told = true;
        }
        tokio::time::sleep(MIGRATION_LOCK_POLL).await;
    }
    let migrated = run_migrators(pool, migrators).await;
    // Ending the session would release it too; unlocking keeps the
    // connection usable for the pool.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *lock)
        .await;
    migrated?;
    unlocked.context("releasing the migration lock")?;
    MIGRATED.store(true, Ordering::Release);
    Ok(())
}

async fn run_migrators(pool: &PgPool, migrators: &[&Migrator]) -> anyhow::Result<()> {
    for migrator in migrators {
        let mut migrator = Migrator {
            migrations: migrator.migrations.clone(),
            ..Migrator::DEFAULT
        };
        migrator.set_ignore_missing(true);
        // Serialised by our lock above.
        migrator.set_locking(false);
        migrator.run(pool).await.context("running migrations")?;
    }
    Ok(())
}

/// A readiness check: [`migrate`] succeeded in this process. Services
/// migrate before they serve, so a serving process passes it; it names the
/// step in `/readyz` rather than probing the database again.
pub fn migrations_check() -> impl Fn() -> CheckFuture + Send + Sync + 'static {
    || {
        let migrated = MIGRATED.load(Ordering::Acquire);
        Box::pin(async move {
            if migrated {
                Ok(())
            } else {
                Err("migrations have not run".to_owned())
            }
        })
    }
}

/// Publishes the pool's connections (`shipshape_db_pool_connections` by
/// state, `shipshape_db_pool_max_connections`) every few seconds until
/// `shutdown`. Reading them takes no connection.
pub async fn sample_pool(pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    let max = f64::from(pool.options().get_max_connections());
    loop {
        let open = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(open);
        metrics::gauge!(POOL_MAX_CONNECTIONS).set(max);
        metrics::gauge!(POOL_CONNECTIONS, "state" => "idle").set(f64::from(idle));
        metrics::gauge!(POOL_CONNECTIONS, "state" => "in_use").set(f64::from(open - idle));
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(POOL_SAMPLE_INTERVAL) => {}
        }
    }
}

/// A readiness check: the pool can run a query within a second.
pub fn check(pool: PgPool) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
    move || {
        let pool = pool.clone();
        Box::pin(async move {
            let query = sqlx::query("SELECT 1").execute(&pool);
            match tokio::time::timeout(Duration::from_secs(1), query).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 1 s".to_owned()),
            }
        })
    }
}

/// `DATABASE_URL` (default: the service's local development database) and
/// `DATABASE_MAX_CONNECTIONS` (default 10).
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env(service: &str) -> anyhow::Result<Self> {
        let local = format!("postgres://shipshape_{service}@127.0.0.1:5432/shipshape_{service}");
        Ok(Self {
            url: crate::config::string_or("DATABASE_URL", &local)?,
            max_connections: crate::config::var_or("DATABASE_MAX_CONNECTIONS", 10)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::error::Error as StdError;

    use sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// A database error with this SQLSTATE, as Postgres would report it.
    #[derive(Debug)]
    struct Refused(&'static str);

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl StdError for Refused {}

    impl DatabaseError for Refused {
        fn message(&self) -> &str {
            "refused"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn code_of(status: &tonic::Status) -> &str {
        status
            .metadata()
            .get(shipshape_proto::ERROR_CODE_METADATA)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn values_the_database_refuses_are_the_callers_fault_not_an_outage() {
        // timestamp out of range, numeric out of range, invalid text.
        for sqlstate in ["22008", "22003", "22P02"] {
            let status = query_failed(&sqlx::Error::Database(Box::new(Refused(sqlstate))), "order");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{sqlstate}");
            assert_eq!(code_of(&status), "invalid_value");
        }
    }

    #[test]
    fn every_other_failure_is_the_database_being_unavailable() {
        let cases = [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Database(Box::new(Refused("57P01"))),
            sqlx::Error::Database(Box::new(Refused("40001"))),
        ];
        for error in cases {
            let status = query_failed(&error, "order");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{error}");
            assert_eq!(code_of(&status), "database_unavailable");
            assert_eq!(status.message(), "order database unavailable");
        }
    }
}
