//! Creating and dropping the per-service databases and their roles, safely
//! from parallel tests.

use anyhow::{Context, bail};
use sqlx::{Connection, Executor, PgConnection};

use super::server::admin_connection;
use super::urls::{check_identifier, service_url};

/// Advisory lock namespaces (with a hash of the name as the second key)
/// that serialize the creation of one role or one database, so parallel
/// tests creating the same one do not fail on each other. Postgres reports
/// such races as unique violations, not as "already exists".
const ROLE_LOCK: i32 = 0x5348_5052; // "SHPR"
const DATABASE_LOCK: i32 = 0x5348_5044; // "SHPD"

/// Creates role `role` (LOGIN, password = its name: a development default,
/// never used outside local runs and tests) if it does not exist, and
/// database `db_name` owned by it if that does not exist. Returns the
/// database's URL for the service, e.g. `postgres://role:role@127.0.0.1:5432/db_name`.
///
/// PUBLIC's default CONNECT and TEMP rights on the database are revoked, as
/// deploy/postgres/init/ does: only its owner (and superusers) can open it,
/// so a service cannot reach another service's database. This is also done
/// for a database that already exists, e.g. one kept from an earlier run.
///
/// Safe to call concurrently from parallel tests: creating one role or one
/// database is serialized by an advisory lock for its name, and "already
/// exists" is not an error. Different databases are created concurrently.
pub async fn create_service_database(
    admin_url: &str,
    db_name: &str,
    role: &str,
) -> anyhow::Result<String> {
    check_identifier(db_name)?;
    check_identifier(role)?;
    let url = service_url(admin_url, db_name, role)?;
    let mut connection = admin_connection(admin_url).await?;
    let created = create_on(&mut connection, db_name, role).await;
    // Ending the session also releases the advisory lock if an error left
    // it taken.
    let _ = connection.close().await;
    created.with_context(|| format!("creating database {db_name} owned by {role}"))?;
    Ok(url)
}

async fn create_on(connection: &mut PgConnection, db_name: &str, role: &str) -> anyhow::Result<()> {
    if !role_exists(connection, role).await? {
        advisory_lock(connection, ROLE_LOCK, role).await?;
        if !role_exists(connection, role).await? {
            // Identifiers are checked, so quoting them is enough.
            let sql = format!(r#"CREATE ROLE "{role}" LOGIN PASSWORD '{role}'"#);
            ignore_code(connection.execute(sql.as_str()).await, "42710")?; // duplicate_object
        }
        advisory_unlock(connection, ROLE_LOCK, role).await?;
    }
    if !database_exists(connection, db_name).await? || is_public(connection, db_name).await? {
        // Also serializes the REVOKE: concurrent changes to one database's
        // privileges fail with "tuple concurrently updated".
        advisory_lock(connection, DATABASE_LOCK, db_name).await?;
        if !database_exists(connection, db_name).await? {
            let sql = format!(r#"CREATE DATABASE "{db_name}" OWNER "{role}""#);
            ignore_code(connection.execute(sql.as_str()).await, "42P04")?; // duplicate_database
        }
        if is_public(connection, db_name).await? {
            // Every role may connect to (and create temporary tables in) a
            // new database through PUBLIC; the owner keeps its rights.
            let sql = format!(r#"REVOKE ALL ON DATABASE "{db_name}" FROM PUBLIC"#);
            connection.execute(sql.as_str()).await?;
        }
        advisory_unlock(connection, DATABASE_LOCK, db_name).await?;
    }
    Ok(())
}

/// Whether PUBLIC (every role) may connect to database `name` or create
/// temporary tables in it; false when it does not exist.
async fn is_public(connection: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    // By oid, not name: has_database_privilege fails for a missing name.
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 \
         AND (has_database_privilege('public', oid, 'CONNECT') \
         OR has_database_privilege('public', oid, 'TEMPORARY')))",
    )
    .bind(name)
    .fetch_one(connection)
    .await
}

/// Takes the advisory lock for `name` in `namespace` (waiting for it).
async fn advisory_lock(
    connection: &mut PgConnection,
    namespace: i32,
    name: &str,
) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(namespace)
        .bind(name)
        .execute(connection)
        .await
        .with_context(|| format!("locking {name} for creation"))?;
    Ok(())
}

async fn advisory_unlock(
    connection: &mut PgConnection,
    namespace: i32,
    name: &str,
) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(namespace)
        .bind(name)
        .execute(connection)
        .await
        .with_context(|| format!("unlocking {name}"))?;
    Ok(())
}

async fn database_exists(connection: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(connection)
        .await
}

async fn role_exists(connection: &mut PgConnection, role: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(connection)
        .await
}

/// Ok when `result` is a success or a database error with SQLSTATE `code`.
fn ignore_code<T>(result: Result<T, sqlx::Error>, code: &str) -> Result<(), sqlx::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(code) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Drops database `name` if it exists, disconnecting anyone still using it.
pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    check_identifier(name)?;
    let mut connection = admin_connection(admin_url).await?;
    let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
    let dropped = connection.execute(sql.as_str()).await;
    let _ = connection.close().await;
    dropped.with_context(|| format!("dropping database {name}"))?;
    Ok(())
}

/// Ends every session on database `name` except the caller's own, with
/// `pg_terminate_backend`, as a database restart or a failover would end
/// them; returns how many were ended.
pub async fn terminate_connections(admin_url: &str, name: &str) -> anyhow::Result<u64> {
    let mut connection = admin_connection(admin_url).await?;
    let ended: Result<i64, sqlx::Error> = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_one(&mut connection)
    .await;
    let _ = connection.close().await;
    let ended = ended.with_context(|| format!("ending the sessions on database {name}"))?;
    Ok(u64::try_from(ended).unwrap_or_default())
}

/// Drops `names` (if they exist) concurrently, which is much faster than one
/// by one: each drop waits for a checkpoint, and concurrent drops share one.
/// Tries every name; the error lists each failure.
pub async fn drop_databases(admin_url: &str, names: &[String]) -> anyhow::Result<()> {
    let mut drops = tokio::task::JoinSet::new();
    for name in names {
        let (admin_url, name) = (admin_url.to_owned(), name.clone());
        drops.spawn(async move { drop_database(&admin_url, &name).await });
    }
    let mut failures = Vec::new();
    while let Some(joined) = drops.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(format!("a drop task failed: {e}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Drops every database whose name starts with `prefix` and returns their
/// names. For databases left behind by test runs that were killed before
/// they could clean up; never call it while tests with that prefix run.
pub async fn drop_stale_test_databases(
    admin_url: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    check_identifier(prefix)?;
    let names: Vec<String> = {
        let mut connection = admin_connection(admin_url).await?;
        let names = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
        )
        .bind(prefix)
        .fetch_all(&mut connection)
        .await
        .context("listing databases");
        let _ = connection.close().await;
        names?
    };
    drop_databases(admin_url, &names).await?;
    Ok(names)
}
