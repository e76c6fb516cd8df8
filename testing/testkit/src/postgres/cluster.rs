//! The private cluster: a Postgres server of our own, created and started
//! when PostgreSQL is installed but no server answers at the admin URL.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{AccessFlags, User, access, chown, geteuid};

use super::ADMIN_URL_VAR;
use crate::process::{run, tail};

#[cfg(doc)]
use super::ensure_server;

/// The port of the private cluster started when no server answers; not
/// 5432, so it never hides or blocks a system server.
pub const PRIVATE_PORT: u16 = 54329;

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
    pub(super) port: u16,
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
mod tests;
