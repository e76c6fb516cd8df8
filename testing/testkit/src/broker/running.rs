//! A running broker: starting it on its configuration (formatting its
//! storage first), waiting until it accepts connections, and killing,
//! pausing, resuming, restarting and stopping it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use shipshape_kafka::{Connection, Login, Password};

use super::config::{ADMIN_USER, LOG4J2, cluster_id};
use super::{BrokerConfig, Installation};
use crate::process::{Process, Stopped, run};

/// Environment variable with the broker's heap size, as the JVM reads it
/// (default `512m`).
pub const KAFKA_HEAP_VAR: &str = "SHIPSHAPE_KAFKA_HEAP";

/// How long a started broker has to accept connections. A cold JVM on a
/// busy two-core machine takes a few seconds.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The super user's password, in the broker's data directory.
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// How long a stopping broker has to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A running Kafka broker on 127.0.0.1. Dropping it kills it.
#[derive(Debug)]
pub struct Broker {
    process: Process,
    config: BrokerConfig,
    installation: Installation,
    /// Where this broker records its class-data-sharing archive, if the
    /// machine has none yet.
    recording: Option<PathBuf>,
    /// Frozen with SIGSTOP ([`Broker::pause`]).
    paused: bool,
    /// The super user's, kept with the data it was formatted into.
    admin_password: Password,
}

impl Broker {
    /// Writes the broker's configuration into its data directory, formats
    /// the storage unless an earlier broker did, starts the broker and
    /// waits until it accepts connections.
    pub async fn start(installation: &Installation, config: BrokerConfig) -> anyhow::Result<Self> {
        // Otherwise the readiness check below could reach someone else's
        // broker while ours fails to bind.
        for port in [config.port, config.controller_port] {
            if crate::ports::in_use(port) {
                bail!(
                    "cannot start the broker: port {port} on 127.0.0.1 is already in use \
                     (is another broker or `cargo xtask up` running?)"
                );
            }
        }
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the broker's directory {}", dir.display()))?;
        let formatted = dir.join("kraft-logs/meta.properties").is_file();
        if formatted && !dir.join(ADMIN_PASSWORD_FILE).is_file() {
            bail!(
                "{} holds a broker formatted without logins (before brokers were secured): \
                 remove the directory to start afresh",
                dir.display()
            );
        }
        let admin_password = admin_password(dir)?;
        let properties = dir.join("server.properties");
        // It holds the super user's password.
        write_private(
            &properties,
            config.server_properties(&admin_password).as_bytes(),
        )?;
        let log4j2 = dir.join("log4j2.properties");
        std::fs::write(&log4j2, LOG4J2).with_context(|| format!("writing {}", log4j2.display()))?;
        let heap = std::env::var(KAFKA_HEAP_VAR).unwrap_or_else(|_| "512m".to_owned());

        if !formatted {
            let mut format = installation.java_command("128m", &log4j2, None);
            format
                .args(["kafka.tools.StorageTool", "format", "--ignore-formatted"])
                .args(["--cluster-id", &cluster_id(), "--config"])
                .arg(&properties);
            if config.secured {
                format.arg("--add-scram").arg(format!(
                    "SCRAM-SHA-512=[name={ADMIN_USER},password={}]",
                    admin_password.expose()
                ));
            }
            run(format, "formatting the Kafka broker's storage")?;
        }

        // Brokers started side by side each record into a file of their
        // own; the first to stop cleanly moves its recording into place.
        let recording = (!installation.archive.is_file()).then(|| {
            installation.archive.with_extension(format!(
                "recording-{}-{}",
                std::process::id(),
                config.port
            ))
        });
        let mut command = installation.java_command(&heap, &log4j2, recording.as_deref());
        command.arg("kafka.Kafka").arg(&properties);
        let process = Process::spawn(
            "broker",
            command,
            &config.log_path,
            config.own_process_group,
        )?;
        let mut broker = Self {
            process,
            config,
            installation: installation.clone(),
            recording,
            paused: false,
            admin_password,
        };
        broker.wait_accepting().await?;
        Ok(broker)
    }

    /// Starts a broker on two free ports with its data in `<dir>/data` and
    /// its output in `<dir>/broker.log`.
    pub async fn start_in(installation: &Installation, dir: &Path) -> anyhow::Result<Self> {
        let [port, controller] = <[u16; 2]>::try_from(crate::ports::free_ports(2)?)
            .map_err(|ports| anyhow!("asked for two free ports, got {ports:?}"))?;
        let config = BrokerConfig::new(port, controller, dir.join("data"), dir.join("broker.log"));
        Self::start(installation, config).await
    }

    /// Starts a broker with the same configuration and data, after this
    /// one was killed or stopped.
    pub async fn restart(self) -> anyhow::Result<Self> {
        let Self {
            mut process,
            config,
            installation,
            ..
        } = self;
        process.kill()?;
        drop(process);
        Self::start(&installation, config).await
    }

    async fn wait_accepting(&mut self) -> anyhow::Result<()> {
        let port = self.config.port;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_status()? {
                bail!(
                    "the Kafka broker exited during start-up ({status}); last lines of {}:\n{}",
                    self.process.log_path().display(),
                    self.process.log_tail(30)
                );
            }
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(250), connect).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the Kafka broker did not accept connections on 127.0.0.1:{port} within \
                     {START_TIMEOUT:?}; last lines of {}:\n{}",
                    self.process.log_path().display(),
                    self.process.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:<port>`, the value for `KAFKA_BROKERS`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.config.port)
    }

    /// A login to it as the super user (on a broker that is not secured,
    /// a plain connection; over TLS, trusting the broker's CA).
    pub fn admin(&self) -> Connection {
        if !self.config.secured {
            return Connection::plaintext(self.address());
        }
        let login = Login::scram(ADMIN_USER, self.admin_password.clone());
        match &self.config.tls {
            Some(tls) => Connection::sasl_ssl(self.address(), login, Some(tls.ca_path.clone())),
            None => Connection::sasl_plaintext(self.address(), login),
        }
    }

    /// The super user's password.
    pub fn admin_password(&self) -> &Password {
        &self.admin_password
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// How it was started.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
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

    /// Kills it with SIGKILL, as a crash would. Its data stays.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill().map(drop)
    }

    /// Freezes it with SIGSTOP: connections stay open and nothing answers.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.process.pause()?;
        self.paused = true;
        Ok(())
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&mut self) -> anyhow::Result<()> {
        self.process.resume()?;
        self.paused = false;
        Ok(())
    }

    /// Stops it with SIGTERM (a controlled shutdown; SIGKILL after 30 s)
    /// and reports how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // A frozen JVM would not see the SIGTERM until the grace ran out.
        if self.paused {
            self.resume()?;
        }
        match self.process.terminate(STOP_GRACE).await? {
            Stopped::Exited(_) => {
                if let Some(recording) = self.recording.take().filter(|r| r.is_file()) {
                    // A rename within one folder: readers see the whole
                    // archive or none.
                    if std::fs::rename(&recording, &self.installation.archive).is_err() {
                        let _ = std::fs::remove_file(&recording);
                    }
                }
                Ok(())
            }
            Stopped::Killed(_) => Err(anyhow!(
                "the Kafka broker did not exit within {STOP_GRACE:?} of SIGTERM and was killed"
            )),
        }
    }
}

/// The super user's password of the broker whose data is in `dir`: made on
/// the first start and kept there (readable by its owner only), since the
/// storage is formatted with it.
fn admin_password(dir: &Path) -> anyhow::Result<Password> {
    let path = dir.join(ADMIN_PASSWORD_FILE);
    match std::fs::read_to_string(&path) {
        Ok(password) => return Ok(Password::new(password.trim())),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("reading {}", path.display()));
        }
        Err(_) => {}
    }
    let password = Password::random();
    write_private(&path, password.expose().as_bytes())?;
    Ok(password)
}

/// Writes `contents` to `path`, readable and writable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // A file made before it held a secret keeps its mode: tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(contents))
        .with_context(|| format!("writing {}", path.display()))
}
