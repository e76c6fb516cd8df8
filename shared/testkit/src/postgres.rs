//! Postgres for tests and local runs: find a server (or start a private one)
//! and create and drop the per-service databases.
//!
//! Each service owns one database and logs in with its own role, as in
//! docker-compose and Helm. Roles (`shipshape_order`, ...) are shared by all
//! runs; databases are per run, so parallel tests never see each other's rows.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{AccessFlags, User, access, chown, geteuid};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

use crate::process::{run, tail};

/// The environment variable naming the admin (superuser) connection URL.
pub const ADMIN_URL_VAR: &str = "SHIPSHAPE_PG_ADMIN_URL";

/// The admin URL used when [`ADMIN_URL_VAR`] is unset: a local server that
/// lets `postgres` in over TCP without a password (trust authentication), or
/// with one from `PGPASSWORD` or `~/.pgpass`, which the client reads when
/// the URL carries none.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How to name a superuser with a password, for servers that ask for one
/// (Debian's does on 127.0.0.1).
const EXAMPLE_ADMIN_URL: &str = "postgres://postgres:PASSWORD@127.0.0.1:5432/postgres";

/// The port of the private cluster started when no server answers; not
/// 5432, so it never hides or blocks a system server.
pub const PRIVATE_PORT: u16 = 54329;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Advisory lock namespaces (with a hash of the name as the second key)
/// that serialize the creation of one role or one database, so parallel
/// tests creating the same one do not fail on each other. Postgres reports
/// such races as unique violations, not as "already exists".
const ROLE_LOCK: i32 = 0x5348_5052; // "SHPR"
const DATABASE_LOCK: i32 = 0x5348_5044; // "SHPD"

/// The admin URL: [`ADMIN_URL_VAR`] if set, else [`DEFAULT_ADMIN_URL`].
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A Postgres server to create databases on, as an admin URL.
///
/// Uses the server at [`admin_url`] when it answers. Otherwise starts (or
/// reuses) a private cluster at [`PrivateCluster::default_location`] if
/// PostgreSQL is installed, and fails with installation advice if not.
pub async fn ensure_server() -> anyhow::Result<String> {
    ensure_server_at(&admin_url(), PrivateCluster::default_location()).await
}

/// [`ensure_server`] with an explicit admin URL and fallback cluster.
pub async fn ensure_server_at(admin_url: &str, fallback: PrivateCluster) -> anyhow::Result<String> {
    let reason = match probe(admin_url).await {
        Probe::Answers => return Ok(admin_url.to_owned()),
        Probe::Unreachable(reason) => reason,
        Probe::Refused(reason) => bail!(
            "PostgreSQL at {} answers but refused the admin connection: {reason}\n\
             Set {ADMIN_URL_VAR} to a superuser URL, e.g. {EXAMPLE_ADMIN_URL}",
            redact(admin_url)
        ),
    };
    // Started by an earlier run: nothing to do. Without its password file
    // it was never created, or was created by an older test kit with trust
    // authentication, which `start` replaces.
    if let Ok(url) = fallback.admin_url()
        && let Probe::Answers = probe(&url).await
    {
        return Ok(url);
    }
    eprintln!(
        "shipshape-testkit: no PostgreSQL at {} ({reason}); \
         starting a private cluster in {} on port {}",
        redact(admin_url),
        fallback.data_dir().display(),
        fallback.port,
    );
    let url = tokio::task::spawn_blocking(move || fallback.start())
        .await
        .context("the private cluster's start task failed")?
        .with_context(|| format!("no PostgreSQL server answers at {}", redact(admin_url)))?;
    match probe(&url).await {
        Probe::Answers => Ok(url),
        Probe::Unreachable(reason) | Probe::Refused(reason) => bail!(
            "the private PostgreSQL cluster started but does not answer at {}: {reason}",
            redact(&url)
        ),
    }
}

enum Probe {
    Answers,
    /// Nothing (usable) listens there: worth starting our own server.
    Unreachable(String),
    /// A server answered and said no (authentication, missing database).
    Refused(String),
}

async fn probe(url: &str) -> Probe {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Err(_) => Probe::Unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")),
        Ok(Ok(connection)) => {
            // Only the answer matters; a failed goodbye does not.
            let _ = connection.close().await;
            Probe::Answers
        }
        Ok(Err(sqlx::Error::Io(e))) => Probe::Unreachable(e.to_string()),
        Ok(Err(e)) => Probe::Refused(e.to_string()),
    }
}

async fn admin_connection(admin_url: &str) -> anyhow::Result<PgConnection> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(admin_url))
        .await
        .map_err(|_| anyhow!("no answer within {CONNECT_TIMEOUT:?}"))
        .and_then(|connected| Ok(connected?))
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(admin_url)))
}

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

/// The URL a service uses for `db_name` as `role`, on the admin URL's server.
pub fn service_url(admin_url: &str, db_name: &str, role: &str) -> anyhow::Result<String> {
    let options = PgConnectOptions::from_str(admin_url)
        .with_context(|| format!("parsing the admin URL {}", redact(admin_url)))?;
    let host = options.get_host();
    let port = options.get_port();
    Ok(if host.starts_with('/') {
        // A Unix socket directory.
        format!("postgres://{role}:{role}@localhost:{port}/{db_name}?host={host}")
    } else if host.contains(':') {
        format!("postgres://{role}:{role}@[{host}]:{port}/{db_name}")
    } else {
        format!("postgres://{role}:{role}@{host}:{port}/{db_name}")
    })
}

/// The `host:port` of the admin URL's server, for a proxy in front of it;
/// fails for a server reached over a Unix socket.
pub fn tcp_address(admin_url: &str) -> anyhow::Result<String> {
    let options = PgConnectOptions::from_str(admin_url)
        .with_context(|| format!("parsing the admin URL {}", redact(admin_url)))?;
    let host = options.get_host();
    if let Some(socket) = options.get_socket() {
        bail!(
            "a database link can be proxied only when Postgres is reached over TCP, not {}",
            socket.display()
        );
    }
    if host.starts_with('/') {
        bail!("a database link can be proxied only when Postgres is reached over TCP, not {host}");
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{}", options.get_port())
    } else {
        format!("{host}:{}", options.get_port())
    })
}

/// `url` (a [`service_url`]) pointed at a proxy on `127.0.0.1:port`.
pub fn via(url: &str, port: u16) -> String {
    let Some((credentials, rest)) = url.split_once('@') else {
        return url.to_owned();
    };
    let database = rest
        .split_once('/')
        .map_or("", |(_, path)| path.split('?').next().unwrap_or(path));
    format!("{credentials}@127.0.0.1:{port}/{database}")
}

/// Database and role names are interpolated into SQL, so only plain
/// lowercase identifiers are accepted.
fn check_identifier(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!(
            "{name:?} is not accepted as a database or role name: use 1 to 63 lowercase \
             letters, digits and underscores, not starting with a digit"
        );
    }
    Ok(())
}

/// `url` with its password (if any) replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// A Postgres cluster of our own, for machines where PostgreSQL is installed
/// but no server answers at the admin URL.
///
/// It listens on 127.0.0.1 only and runs with `fsync = off`: it holds
/// development data only. Yet it asks every TCP connection for a password
/// (`scram-sha-256`), as Debian's cluster in CI and the deployed databases
/// do, so that a service's credentials are checked in every run and a test
/// that passes here cannot rely on a server that lets anyone in. The
/// `postgres` superuser's password is random, made when the cluster is
/// created and kept in [`PrivateCluster::password_path`]; its
/// [`admin_url`](PrivateCluster::admin_url) carries it. (It has no Unix
/// socket, so initdb's `trust` for local connections opens nothing.)
///
/// Once started it keeps running after the caller exits, so later runs
/// start in milliseconds; stop it with [`PrivateCluster::stop`] or
/// `pg_ctl -D <data dir> stop`.
///
/// PostgreSQL refuses to run as root, so as root the cluster runs as the
/// `postgres` OS user, in a directory that user owns.
#[derive(Clone, Debug)]
pub struct PrivateCluster {
    base_dir: PathBuf,
    port: u16,
}

impl PrivateCluster {
    /// A cluster in `base_dir` (data in `base_dir/pgdata`, server log in
    /// `base_dir/postgres.log`) listening on `127.0.0.1:port`.
    pub fn new(base_dir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            base_dir: base_dir.into(),
            port,
        }
    }

    /// The cluster [`ensure_server`] falls back to, on [`PRIVATE_PORT`]:
    /// `<workspace>/.shipshape/` for a normal user who can write to the
    /// workspace, else `/tmp/shipshape-pg-<uid>/` (always as root: the
    /// `postgres` user may not be able to reach the workspace).
    pub fn default_location() -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let use_workspace = !geteuid().is_root()
            && workspace.join("Cargo.toml").is_file()
            && access(&workspace, AccessFlags::W_OK).is_ok();
        let base_dir = if use_workspace {
            workspace.join(".shipshape")
        } else {
            std::env::temp_dir().join(format!("shipshape-pg-{}", geteuid()))
        };
        Self::new(base_dir, PRIVATE_PORT)
    }

    /// Its admin URL: user `postgres` with the password kept in
    /// [`password_path`](Self::password_path). Fails when that cannot be
    /// read, e.g. before [`start`](Self::start) has created the cluster.
    pub fn admin_url(&self) -> anyhow::Result<String> {
        let path = self.password_path();
        let password = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the superuser's password from {}", path.display()))?;
        let password = password.trim_end();
        if password.is_empty() {
            bail!("{} holds no password", path.display());
        }
        // Hex digits: nothing to escape in a URL.
        Ok(format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres",
            self.port
        ))
    }

    /// Where the `postgres` superuser's password is kept: readable by its
    /// owner only (the `postgres` OS user when we are root, who is also
    /// the one initdb reads it as), next to the data directory.
    pub fn password_path(&self) -> PathBuf {
        self.base_dir.join("postgres-password")
    }

    /// Where its data lives.
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir.join("pgdata")
    }

    /// Where the server writes its log.
    pub fn log_path(&self) -> PathBuf {
        self.base_dir.join("postgres.log")
    }

    /// Creates the cluster if needed and starts it if it is not running;
    /// blocks until it accepts connections. Returns its admin URL.
    ///
    /// Concurrent callers (parallel test processes) are serialized by a lock
    /// file in the base directory.
    pub fn start(&self) -> anyhow::Result<String> {
        let tools = Tools::find()?;
        std::fs::create_dir_all(&self.base_dir)
            .with_context(|| format!("creating {}", self.base_dir.display()))?;
        if let Some(user) = &tools.run_as {
            chown(&self.base_dir, Some(user.uid), Some(user.gid)).with_context(|| {
                format!("handing {} to the postgres user", self.base_dir.display())
            })?;
        }
        let _lock = lock_file(&self.base_dir.join(".lock"))?;
        let data_dir = self.data_dir();
        if data_dir.join("PG_VERSION").is_file() && !self.password_path().is_file() {
            // Made by an older test kit, with trust authentication: it
            // holds throwaway databases only, so it is replaced rather than
            // converted.
            eprintln!(
                "shipshape-testkit: the private cluster in {} lets anyone in without a \
                 password (an older test kit made it); recreating it with password \
                 authentication, without its databases",
                data_dir.display()
            );
            self.stop()?;
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing {}", data_dir.display()))?;
        }
        if !data_dir.join("PG_VERSION").is_file() {
            self.init(&tools)?;
        }
        if tools.is_running(&data_dir, &self.base_dir)? {
            return self.admin_url();
        }
        let started = run(
            tools.command(
                "pg_ctl",
                &self.base_dir,
                [
                    "-D".into(),
                    data_dir.clone().into_os_string(),
                    "-l".into(),
                    self.log_path().into_os_string(),
                    "-w".into(),
                    "-t".into(),
                    "60".into(),
                    "start".into(),
                ],
            ),
            "starting the private PostgreSQL cluster",
        );
        if let Err(e) = started {
            bail!(
                "{e:#}\nlast lines of {}:\n{}\n(if the data directory is broken or from another \
                 PostgreSQL version, delete {} to recreate it)",
                self.log_path().display(),
                tail(&self.log_path(), 30),
                data_dir.display()
            );
        }
        self.admin_url()
    }

    /// Creates the cluster with a new random password for `postgres`,
    /// written to [`password_path`](Self::password_path) first: initdb
    /// reads it from there, never from its command line, which every local
    /// user can see.
    fn init(&self, tools: &Tools) -> anyhow::Result<()> {
        let data_dir = self.data_dir();
        let password_path = self.password_path();
        write_secret(&password_path, &random_password()?, tools.run_as.as_ref())?;
        let mut pwfile = OsString::from("--pwfile=");
        pwfile.push(&password_path);
        run(
            tools.command(
                "initdb",
                &self.base_dir,
                [
                    "-D".into(),
                    data_dir.clone().into_os_string(),
                    "--username=postgres".into(),
                    pwfile,
                    // TCP, the only way in (there is no Unix socket).
                    "--auth-host=scram-sha-256".into(),
                    "--auth-local=trust".into(),
                    "--encoding=UTF8".into(),
                    "--no-locale".into(),
                    "--no-sync".into(),
                ],
            ),
            "creating the private PostgreSQL cluster (initdb)",
        )?;
        // password_encryption: the service roles' passwords must be stored
        // as SCRAM verifiers to pass pg_hba's scram-sha-256; PostgreSQL 13
        // and older store MD5 by default.
        let settings = format!(
            "\n# Added by shipshape-testkit: a private development cluster.\n\
             port = {}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = ''\n\
             password_encryption = 'scram-sha-256'\n\
             max_connections = 300\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            self.port
        );
        let config = data_dir.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&config)
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .with_context(|| format!("configuring {}", config.display()))
    }

    /// Stops the cluster (fast shutdown) if it is running.
    pub fn stop(&self) -> anyhow::Result<()> {
        let tools = Tools::find()?;
        let data_dir = self.data_dir();
        if !data_dir.join("PG_VERSION").is_file() || !tools.is_running(&data_dir, &self.base_dir)? {
            return Ok(());
        }
        run(
            tools.command(
                "pg_ctl",
                &self.base_dir,
                [
                    "-D".into(),
                    data_dir.into_os_string(),
                    "-m".into(),
                    "fast".into(),
                    "-w".into(),
                    "-t".into(),
                    "60".into(),
                    "stop".into(),
                ],
            ),
            "stopping the private PostgreSQL cluster",
        )?;
        Ok(())
    }
}

/// 32 hex digits (128 bits) from the kernel's random number generator.
fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0_u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom for the superuser's password")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Writes `secret` as the one line of `path`, readable by its owner only:
/// `owner` when given (the OS user the server runs as), else us.
///
/// The folder may belong to that user, so it could have put a link where
/// the file goes: the file is opened without following links, and its
/// owner and mode are changed through the open file, never by path.
fn write_secret(path: &Path, secret: &str, owner: Option<&User>) -> anyhow::Result<()> {
    let written = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut file| {
            // `mode` applies only to a new file; one left by an earlier
            // cluster is narrowed too.
            file.set_permissions(Permissions::from_mode(0o600))?;
            if let Some(user) = owner {
                std::os::unix::fs::fchown(&file, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
            }
            writeln!(file, "{secret}")
        });
    written.with_context(|| format!("writing {} for the postgres user", path.display()))?;
    Ok(())
}

fn lock_file(path: &Path) -> anyhow::Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {}", path.display()))
}

/// The PostgreSQL server programs, and the user to run them as.
struct Tools {
    bin_dir: PathBuf,
    /// `Some` when we are root: initdb and postgres refuse to run as root.
    run_as: Option<User>,
    runuser: Option<PathBuf>,
}

impl Tools {
    fn find() -> anyhow::Result<Self> {
        let bin_dir = find_server_bin_dir().ok_or_else(|| {
            anyhow!(
                "PostgreSQL is not installed (no initdb and pg_ctl on PATH or in \
                 /usr/lib/postgresql/*/bin). Install it (e.g. `apt-get install postgresql`), \
                 point {ADMIN_URL_VAR} at a running server, or use `docker compose up` instead"
            )
        })?;
        let (run_as, runuser) = if geteuid().is_root() {
            let user = User::from_name("postgres")
                .context("looking up the postgres user")?
                .ok_or_else(|| {
                    anyhow!(
                        "running as root, and PostgreSQL refuses to run as root: create a \
                         `postgres` OS user (installing the postgresql package does) or run as \
                         a normal user"
                    )
                })?;
            (Some(user), find_program("runuser"))
        } else {
            (None, None)
        };
        Ok(Self {
            bin_dir,
            run_as,
            runuser,
        })
    }

    /// A command running server program `program` with `args` (as the
    /// postgres user when we are root) in `dir`.
    fn command(
        &self,
        program: &str,
        dir: &Path,
        args: impl IntoIterator<Item = OsString>,
    ) -> Command {
        let program = self.bin_dir.join(program);
        let mut command = match (&self.run_as, &self.runuser) {
            (None, _) => Command::new(&program),
            (Some(user), Some(runuser)) => {
                let mut command = Command::new(runuser);
                command.arg("-u").arg(&user.name).arg("--").arg(&program);
                command
            }
            (Some(user), None) => {
                // su runs a shell; passing the program and arguments as
                // positional parameters avoids quoting them.
                let mut command = Command::new("su");
                command
                    .args([
                        "-s",
                        "/bin/sh",
                        user.name.as_str(),
                        "-c",
                        r#"exec "$0" "$@""#,
                    ])
                    .arg(&program);
                command
            }
        };
        // The postgres user may not be allowed into the caller's directory.
        command.args(args).current_dir(dir);
        command
    }

    fn is_running(&self, data_dir: &Path, base_dir: &Path) -> anyhow::Result<bool> {
        // Exit status 0: running; 3: not running; 4: no usable data directory.
        let status = self
            .command(
                "pg_ctl",
                base_dir,
                ["status".into(), "-D".into(), data_dir.into()],
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("running pg_ctl status")?;
        Ok(status.success())
    }
}

/// The first directory holding both `initdb` and `pg_ctl`: PATH first, then
/// Debian's versioned directories, newest version first.
fn find_server_bin_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    candidates.extend(versioned.into_iter().map(|(_, dir)| dir));
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(prefix: &str) -> String {
        format!(
            "{prefix}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    }

    async fn database_exists(admin: &str, name: &str) -> bool {
        let mut connection = admin_connection(admin).await.expect("admin connection");
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut connection)
            .await
            .expect("query pg_database")
    }

    async fn drop_role(admin: &str, role: &str) {
        let mut connection = admin_connection(admin).await.expect("admin connection");
        connection
            .execute(format!(r#"DROP ROLE IF EXISTS "{role}""#).as_str())
            .await
            .expect("drop role");
    }

    #[tokio::test]
    async fn a_server_that_refuses_is_reported_with_the_variable_to_set() {
        let admin = ensure_server().await.expect("a Postgres server");
        // A database that does not exist: refused whatever the server's
        // authentication, as a wrong password is where one is asked for.
        let (server, _) = admin.rsplit_once('/').expect("a database in the admin URL");
        let refused = format!("{server}/{}", unique("shipshape_missing_"));
        let fallback = PrivateCluster::new(
            std::env::temp_dir().join(unique("shipshape-unused-")),
            PRIVATE_PORT + 1,
        );

        let error = ensure_server_at(&refused, fallback.clone())
            .await
            .expect_err("a refusing server is an error");

        let message = format!("{error:#}");
        assert!(
            message.contains("refused the admin connection"),
            "{message}"
        );
        assert!(message.contains(ADMIN_URL_VAR), "{message}");
        assert!(
            !fallback.data_dir().exists(),
            "a server that refuses is not replaced by a private cluster"
        );
    }

    #[tokio::test]
    async fn creates_a_database_the_role_owns_and_drops_it() {
        let admin = ensure_server().await.expect("a Postgres server");
        let name = unique("shipshape_tkit_");
        let role = "shipshape_testkit";
        let url = create_service_database(&admin, &name, role)
            .await
            .expect("create");
        assert!(url.starts_with(&format!("postgres://{role}:{role}@")));
        assert!(url.ends_with(&format!("/{name}")));

        // The service role can log in and create tables: it owns the database.
        let mut service = PgConnection::connect(&url).await.expect("connect as role");
        service
            .execute("CREATE TABLE probe (id INT PRIMARY KEY); INSERT INTO probe VALUES (1)")
            .await
            .expect("the role can create tables");

        // Creating it again is not an error.
        let again = create_service_database(&admin, &name, role)
            .await
            .expect("create again");
        assert_eq!(again, url);

        // Dropping works while the role is still connected.
        drop_database(&admin, &name).await.expect("drop");
        assert!(!database_exists(&admin, &name).await);
        drop_database(&admin, &name)
            .await
            .expect("dropping a missing database is fine");
    }

    #[tokio::test]
    async fn concurrent_creation_of_the_same_role_and_database_succeeds() {
        let admin = ensure_server().await.expect("a Postgres server");
        let role = unique("shipshape_tkrole_");
        let names: Vec<String> = (0..3).map(|_| unique("shipshape_tkit_")).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for round in 0..6 {
            let (admin, role, name) = (admin.clone(), role.clone(), names[round % 3].clone());
            tasks.spawn(async move { create_service_database(&admin, &name, &role).await });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            results.push(joined.expect("task"));
        }
        for name in &names {
            drop_database(&admin, name).await.expect("drop");
        }
        drop_role(&admin, &role).await;
        for result in results {
            result.expect("every concurrent creation succeeds");
        }
    }

    #[tokio::test]
    async fn drops_only_databases_with_the_stale_prefix() {
        let admin = ensure_server().await.expect("a Postgres server");
        let prefix = format!("{}_", unique("shipshape_tkstale"));
        let stale = [format!("{prefix}a"), format!("{prefix}b")];
        let other = unique("shipshape_tkother_");
        for name in stale.iter().chain([&other]) {
            create_service_database(&admin, name, "shipshape_testkit")
                .await
                .expect("create");
        }
        let dropped = drop_stale_test_databases(&admin, &prefix)
            .await
            .expect("drop stale");
        assert_eq!(dropped, stale.to_vec());
        for name in &stale {
            assert!(!database_exists(&admin, name).await);
        }
        assert!(database_exists(&admin, &other).await);
        drop_database(&admin, &other).await.expect("drop");
    }

    #[test]
    fn names_that_would_need_quoting_are_rejected() {
        for bad in ["", "Order", "1db", "a-b", "x\"; DROP", &"a".repeat(64)] {
            assert!(check_identifier(bad).is_err(), "{bad:?} must be rejected");
        }
        for good in ["shipshape_order", "_x", "shipshape_t0123abcd_order"] {
            check_identifier(good).expect(good);
        }
    }

    #[test]
    fn a_proxied_url_keeps_role_and_database_and_swaps_the_server() {
        let url = service_url(
            "postgres://postgres@127.0.0.1:5432/postgres",
            "shop_order",
            "shop_order",
        )
        .unwrap();
        assert_eq!(
            via(&url, 40001),
            "postgres://shop_order:shop_order@127.0.0.1:40001/shop_order"
        );
        assert_eq!(
            tcp_address("postgres://postgres@127.0.0.1:5432/postgres").unwrap(),
            "127.0.0.1:5432"
        );
        assert!(
            tcp_address("postgres://postgres@localhost/postgres?host=/run/postgresql").is_err()
        );
    }

    #[test]
    fn service_urls_point_at_the_admin_server() {
        let url = service_url(
            "postgres://postgres:secret@db.local:6543/postgres",
            "shop",
            "clerk",
        )
        .expect("url");
        assert_eq!(url, "postgres://clerk:clerk@db.local:6543/shop");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:1/d"),
            "postgres://u:***@h:1/d"
        );
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact("not a url"), "not a url");
    }

    /// Stops and removes a private cluster even when the test fails.
    struct ClusterGuard(PrivateCluster);

    impl Drop for ClusterGuard {
        fn drop(&mut self) {
            if let Err(e) = self.0.stop() {
                eprintln!("could not stop the test cluster: {e:#}");
            }
            let _ = std::fs::remove_dir_all(&self.0.base_dir);
        }
    }

    #[tokio::test]
    async fn falls_back_to_a_private_cluster_when_no_server_answers() {
        // Every machine that runs the suite has PostgreSQL (`.ci/run`
        // installs it); without it this test fails, so the fallback is never
        // reported green untested.
        assert!(
            find_server_bin_dir().is_some(),
            "PostgreSQL's server programs (initdb and pg_ctl) are on neither PATH nor \
             /usr/lib/postgresql/*/bin: install PostgreSQL (e.g. `apt-get install postgresql`) \
             to test the private-cluster fallback"
        );
        let dead = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            crate::free_port()
        );
        let base = std::env::temp_dir().join(unique("shipshape-pg-test-"));
        let guard = ClusterGuard(PrivateCluster::new(&base, crate::free_port()));

        let url = ensure_server_at(&dead, guard.0.clone())
            .await
            .expect("a private cluster");
        assert_eq!(url, guard.0.admin_url().expect("its admin URL"));
        assert_ne!(redact(&url), url, "the admin URL carries a password");

        // It asks for that password: the superuser without it is refused.
        let passwordless = format!("postgres://postgres@127.0.0.1:{}/postgres", guard.0.port);
        let error = PgConnection::connect(&passwordless)
            .await
            .expect_err("the private cluster let postgres in without a password");
        assert_eq!(
            error.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("28P01"),
            "refused as invalid_password: {error}"
        );
        let db = create_service_database(&url, "shipshape_tkprivate", "shipshape_testkit")
            .await
            .expect("create on the private cluster");
        PgConnection::connect(&db)
            .await
            .expect("connect as the role")
            .close()
            .await
            .expect("close");

        // A second start finds it running.
        let again = tokio::task::spawn_blocking({
            let cluster = guard.0.clone();
            move || cluster.start()
        })
        .await
        .expect("task")
        .expect("start again");
        assert_eq!(again, url);
        drop(guard);
        assert!(!base.exists());
    }
}
