//! The broker for local runs and tests: Apache Kafka itself, in KRaft mode,
//! one node that is both broker and controller, on 127.0.0.1.
//!
//! Its jars come from Maven Central: `deploy/kafka/pom.xml` names
//! `org.apache.kafka:kafka_2.13` at [`KAFKA_VERSION`], the version
//! docker-compose and the Helm chart run, and [`Installation::install`] has
//! Maven copy it and everything it needs at run time into
//! `~/.cache/shipshape/kafka-<version>/libs`, once per machine. A broker is
//! then `java -cp libs/* kafka.Kafka server.properties`, after the storage
//! is formatted (`kafka.tools.StorageTool format`), exactly what the
//! distribution's shell scripts do.
//!
//! Each broker keeps its data in a directory of its own, so a broker killed
//! with SIGKILL comes back on the same data with every acknowledged message
//! (producers use `acks=all`). The first broker to stop cleanly on a
//! machine also leaves a record of the classes its JVM loaded (a
//! class-data-sharing archive), which makes every later start about a third
//! faster.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::process::{Process, Stopped, run};

/// The Apache Kafka release every broker of ours runs; the same as
/// `deploy/kafka/pom.xml` (a test below checks) and the `apache/kafka`
/// image of docker-compose, the chart and `k8s/` (kept in step by hand).
pub const KAFKA_VERSION: &str = "4.4.0";

/// The Maven project that names the broker's jars.
const POM: &str = include_str!("../../../deploy/kafka/pom.xml");

/// Environment variable naming a folder that already holds the broker's
/// jars (a machine without Maven, say); used instead of the cache.
pub const KAFKA_LIBS_VAR: &str = "SHIPSHAPE_KAFKA_LIBS";

/// Environment variable with the broker's heap size, as the JVM reads it
/// (default `512m`).
pub const KAFKA_HEAP_VAR: &str = "SHIPSHAPE_KAFKA_HEAP";

/// Environment variable with the address (`127.0.0.1:<port>`) of the
/// broker `cargo xtask test` starts for the whole run. Tests then share it,
/// each under a topic prefix of its own, rather than start a JVM each; a
/// test that kills the broker or cuts it off still starts its own.
pub const SHARED_BROKER_VAR: &str = "SHIPSHAPE_SHARED_BROKER";

/// The address of the run's shared broker ([`SHARED_BROKER_VAR`]), if the
/// run has one.
pub fn shared_broker() -> Option<String> {
    std::env::var(SHARED_BROKER_VAR)
        .ok()
        .filter(|address| !address.is_empty())
}

/// A fresh topic prefix for one test on a shared broker: `t`, 8 random hex
/// digits and a dot.
pub fn test_topic_prefix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}.", &id[..8])
}

/// The oldest Java the broker runs on (Kafka 4 needs 17).
const MIN_JAVA: u32 = 17;

/// How long a started broker has to accept connections. A cold JVM on a
/// busy two-core machine takes a few seconds.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopping broker has to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// `$HOME/.cache/shipshape`: what is fetched once per machine.
fn cache_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .ok_or_else(|| anyhow!("HOME is not set, so the broker cache cannot be found"))?;
    Ok(PathBuf::from(home).join(".cache/shipshape"))
}

/// `$HOME/.cache/shipshape/kafka-<version>`: the jars (`libs/`) and the
/// class-data-sharing archive.
pub fn kafka_dir() -> anyhow::Result<PathBuf> {
    Ok(cache_dir()?.join(format!("kafka-{KAFKA_VERSION}")))
}

/// What it takes to start a broker: a Java runtime and the broker's jars.
#[derive(Clone, Debug)]
pub struct Installation {
    java: PathBuf,
    java_version: String,
    libs: PathBuf,
    /// The class-data-sharing archive of this Java and these jars.
    archive: PathBuf,
}

impl Installation {
    /// The Java runtime and the jars, fetching the jars with Maven first if
    /// they are not cached. Fails with one line naming what is missing and
    /// the command that installs it.
    pub fn install() -> anyhow::Result<Self> {
        let (java, java_version) = find_java()?;
        let libs = match std::env::var_os(KAFKA_LIBS_VAR) {
            Some(dir) => checked_libs(PathBuf::from(dir))?,
            None => {
                let libs = kafka_dir()?.join("libs");
                if !libs.is_dir() {
                    resolve_jars(&libs)?;
                }
                checked_libs(libs)?
            }
        };
        let archive = kafka_dir()?.join(format!("classes-java-{java_version}.jsa"));
        Ok(Self {
            java,
            java_version,
            libs,
            archive,
        })
    }

    /// An installation that was never checked, for tests of what a stack
    /// would give its processes.
    #[cfg(test)]
    pub(crate) fn unchecked() -> Self {
        Self {
            java: PathBuf::from("java"),
            java_version: String::new(),
            libs: PathBuf::from("libs"),
            archive: PathBuf::from("classes.jsa"),
        }
    }

    /// The folder of the broker's jars.
    pub fn libs(&self) -> &Path {
        &self.libs
    }

    /// The `java` binary.
    pub fn java(&self) -> &Path {
        &self.java
    }

    /// The runtime's version, as `java -version` prints it.
    pub fn java_version(&self) -> &str {
        &self.java_version
    }

    /// A `java` command with the broker's class path and `log4j2` as its
    /// logging configuration; it uses the class-data-sharing archive when
    /// there is one, and otherwise records one into `record_to` if given
    /// (the JVM writes it as it exits).
    fn java_command(&self, heap: &str, log4j2: &Path, record_to: Option<&Path>) -> Command {
        let mut command = Command::new(&self.java);
        command
            .arg(format!("-Xms{heap}"))
            .arg(format!("-Xmx{heap}"))
            .args(["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"])
            .arg("-XX:+ExitOnOutOfMemoryError")
            .arg("-Djava.awt.headless=true")
            .arg(format!("-Dlog4j2.configurationFile={}", log4j2.display()));
        if self.archive.is_file() {
            command.arg(format!("-XX:SharedArchiveFile={}", self.archive.display()));
        } else if let Some(recording) = record_to {
            command.arg(format!("-XX:ArchiveClassesAtExit={}", recording.display()));
        }
        command
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            // The broker reads none of these; a developer's shell must not
            // change what it does.
            .env_remove("KAFKA_OPTS")
            .env_remove("JAVA_TOOL_OPTIONS")
            .env_remove("_JAVA_OPTIONS");
        command
    }
}

/// `$JAVA_HOME/bin/java` if `JAVA_HOME` is set, else `java` on the `PATH`,
/// with its version; fails unless it is Java 17 or later.
fn find_java() -> anyhow::Result<(PathBuf, String)> {
    let java = match std::env::var_os("JAVA_HOME").filter(|home| !home.is_empty()) {
        Some(home) => PathBuf::from(home).join("bin/java"),
        None => PathBuf::from("java"),
    };
    let install = "install it with `apt-get install openjdk-17-jre-headless` (or set JAVA_HOME)";
    let output = Command::new(&java).arg("-version").output().map_err(|e| {
        anyhow!(
            "Java {MIN_JAVA} or later is needed to run the Kafka broker, but {} cannot be \
                 run ({e}): {install}",
            java.display()
        )
    })?;
    let banner = String::from_utf8_lossy(&output.stderr);
    let version = java_version(&banner).ok_or_else(|| {
        anyhow!(
            "cannot tell which Java {} is (it printed {:?}); Java {MIN_JAVA} or later is \
             needed to run the Kafka broker: {install}",
            java.display(),
            banner.lines().next().unwrap_or_default()
        )
    })?;
    let major = major_version(&version);
    if major.is_none_or(|major| major < MIN_JAVA) {
        bail!(
            "the Kafka broker needs Java {MIN_JAVA} or later, but {} is Java {version}: {install}",
            java.display()
        );
    }
    Ok((java, version))
}

/// The quoted version in the first line of `java -version`'s output
/// (`openjdk version "17.0.15" 2025-04-15`).
fn java_version(banner: &str) -> Option<String> {
    let first = banner.lines().next()?;
    let start = first.find('"')? + 1;
    let end = start + first[start..].find('"')?;
    Some(first[start..end].to_owned())
}

/// `17` of `17.0.15`, and `8` of the old `1.8.0_392` scheme.
fn major_version(version: &str) -> Option<u32> {
    let mut parts = version.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// Fails unless `libs` holds the broker's main jar.
fn checked_libs(libs: PathBuf) -> anyhow::Result<PathBuf> {
    let main_jar = libs.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"));
    if !main_jar.is_file() {
        bail!(
            "{} holds no {}: not the jars of Kafka {KAFKA_VERSION} (remove the folder, or fix \
             {KAFKA_LIBS_VAR}, to fetch them again)",
            libs.display(),
            main_jar.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    Ok(libs)
}

/// Has Maven copy the broker's run-time jars into `libs`: into a folder of
/// this process's first, renamed into place when complete, so a failed or
/// concurrent fetch never leaves half a folder behind.
fn resolve_jars(libs: &Path) -> anyhow::Result<()> {
    let dir = libs
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent folder", libs.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let maven_ok = Command::new("mvn")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !maven_ok {
        bail!(
            "Maven is needed once, to fetch Kafka {KAFKA_VERSION}'s jars from Maven Central, but \
             `mvn` cannot be run: install it with `apt-get install maven`"
        );
    }
    let pom = dir.join("pom.xml");
    std::fs::write(&pom, POM).with_context(|| format!("writing {}", pom.display()))?;
    let partial = dir.join(format!("libs.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    eprintln!(
        "fetching Apache Kafka {KAFKA_VERSION}'s jars with Maven into {} (once per machine)",
        libs.display()
    );
    let mut copy = Command::new("mvn");
    copy.args(["--batch-mode", "--quiet", "--file"])
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg("-DincludeScope=runtime")
        .arg(format!("-DoutputDirectory={}", partial.display()));
    if let Err(e) = run(copy, "fetching the Kafka jars with Maven") {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e.context(format!(
            "the jars of Kafka {KAFKA_VERSION} could not be resolved from Maven Central \
             (deploy/kafka/pom.xml); Maven's output above names what is missing"
        )));
    }
    match std::fs::rename(&partial, libs) {
        Ok(()) => Ok(()),
        // Another process finished first: its folder is as good as ours.
        Err(_) if libs.is_dir() => {
            let _ = std::fs::remove_dir_all(&partial);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("moving the jars into {}", libs.display())),
    }
}

/// A random cluster id as Kafka writes them: 16 random bytes in URL-safe
/// base64 without padding (22 characters), never starting with `-`, which
/// the storage tool would read as an option (Kafka's own ids avoid it too).
fn cluster_id() -> String {
    loop {
        let id = encoded_uuid();
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// A random UUID in URL-safe base64 without padding.
fn encoded_uuid() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits = 0u32;
    let mut held = 0;
    let mut id = String::with_capacity(22);
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        held += 8;
        while held >= 6 {
            held -= 6;
            id.push(char::from(ALPHABET[((bits >> held) & 63) as usize]));
        }
    }
    if held > 0 {
        id.push(char::from(ALPHABET[((bits << (6 - held)) & 63) as usize]));
    }
    id
}

/// Where and how one broker runs.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The port clients connect to (the `PLAINTEXT` listener).
    pub port: u16,
    /// The KRaft controller's port.
    pub controller_port: u16,
    /// The port the broker tells clients to connect to: a fault proxy in
    /// front of it, or `port` itself.
    pub advertised_port: u16,
    /// Its configuration and data; kept across restarts.
    pub data_dir: PathBuf,
    /// Where its output goes (appended).
    pub log_path: PathBuf,
    /// As in [`crate::StackOptions::own_process_group`].
    pub own_process_group: bool,
}

impl BrokerConfig {
    /// A broker on `port` (and `controller_port`) advertising itself.
    pub fn new(port: u16, controller_port: u16, data_dir: PathBuf, log_path: PathBuf) -> Self {
        Self {
            port,
            controller_port,
            advertised_port: port,
            data_dir,
            log_path,
            own_process_group: false,
        }
    }

    /// The broker's `server.properties`.
    fn server_properties(&self) -> String {
        let Self {
            port,
            controller_port,
            advertised_port,
            ..
        } = self;
        let mut properties = String::new();
        let mut set = |key: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(properties, "{key}={value}");
        };
        set("process.roles", &"broker,controller");
        set("node.id", &1);
        set(
            "controller.quorum.voters",
            &format!("1@127.0.0.1:{controller_port}"),
        );
        set(
            "listeners",
            &format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
        );
        set(
            "advertised.listeners",
            &format!("PLAINTEXT://127.0.0.1:{advertised_port}"),
        );
        set("controller.listener.names", &"CONTROLLER");
        set("inter.broker.listener.name", &"PLAINTEXT");
        set(
            "listener.security.protocol.map",
            &"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        );
        set("log.dirs", &self.data_dir.join("kraft-logs").display());
        // Topics are made by the services, with the partition count they
        // are configured with; a typo must not create one.
        set("auto.create.topics.enable", &false);
        set("num.partitions", &1);
        // One node: every internal topic has one replica.
        set("offsets.topic.replication.factor", &1);
        set("offsets.topic.num.partitions", &10);
        set("transaction.state.log.replication.factor", &1);
        set("transaction.state.log.min.isr", &1);
        set("share.coordinator.state.topic.replication.factor", &1);
        set("share.coordinator.state.topic.min.isr", &1);
        // The first member of a group is assigned at once, not after 3 s.
        set("group.initial.rebalance.delay.ms", &0);
        // The consumer protocol (KIP-848) keeps its timeouts on the broker:
        // as short as the classic protocol's in tests, so a killed member's
        // partitions move on within seconds.
        set("group.consumer.min.session.timeout.ms", &1000);
        set("group.consumer.session.timeout.ms", &6000);
        set("group.consumer.min.heartbeat.interval.ms", &500);
        set("group.consumer.heartbeat.interval.ms", &1000);
        properties
    }
}

/// The broker's logging: everything to standard output, which goes to its
/// log file; the chattiest loggers only from warnings up.
const LOG4J2: &str = "\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
logger.storage.name = org.apache.kafka.storage
logger.storage.level = warn
logger.log.name = kafka.log
logger.log.level = warn
";

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
        let properties = dir.join("server.properties");
        std::fs::write(&properties, config.server_properties())
            .with_context(|| format!("writing {}", properties.display()))?;
        let log4j2 = dir.join("log4j2.properties");
        std::fs::write(&log4j2, LOG4J2).with_context(|| format!("writing {}", log4j2.display()))?;
        let heap = std::env::var(KAFKA_HEAP_VAR).unwrap_or_else(|_| "512m".to_owned());

        if !dir.join("kraft-logs/meta.properties").is_file() {
            let mut format = installation.java_command("128m", &log4j2, None);
            format
                .args(["kafka.tools.StorageTool", "format", "--ignore-formatted"])
                .args(["--cluster-id", &cluster_id(), "--config"])
                .arg(&properties);
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

/// The broker one test talks to: the run's shared broker when there is one,
/// or else a broker started for this test alone.
#[derive(Debug)]
pub enum TestBroker {
    /// The run's broker, at this address; the test keeps to its own topics.
    Shared(String),
    /// A broker of the test's own, stopped with it.
    Own(Box<Broker>),
}

impl TestBroker {
    /// The shared broker, or a broker of its own with its data and log in
    /// `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        if let Some(address) = shared_broker() {
            return Ok(Self::Shared(address));
        }
        let installation = Installation::install()?;
        Ok(Self::Own(Box::new(
            Broker::start_in(&installation, dir).await?,
        )))
    }

    /// `127.0.0.1:<port>`, the value for `KAFKA_BROKERS`.
    pub fn address(&self) -> String {
        match self {
            Self::Shared(address) => address.clone(),
            Self::Own(broker) => broker.address(),
        }
    }

    /// Stops the test's own broker; the shared one runs on.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Shared(_) => Ok(()),
            Self::Own(broker) => broker.stop().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scratch::ScratchDir;

    #[test]
    fn the_pinned_version_is_the_one_maven_resolves() {
        assert!(
            POM.contains(&format!("<kafka.version>{KAFKA_VERSION}</kafka.version>")),
            "deploy/kafka/pom.xml pins another Kafka than {KAFKA_VERSION}"
        );
    }

    #[test]
    fn java_versions_are_read_from_the_banner() {
        let banner = "openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime Environment";
        assert_eq!(java_version(banner).as_deref(), Some("17.0.15"));
        assert_eq!(major_version("17.0.15"), Some(17));
        assert_eq!(major_version("21"), Some(21));
        assert_eq!(major_version("1.8.0_392"), Some(8));
        assert_eq!(java_version("no quotes here"), None);
    }

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let a = cluster_id();
        assert_eq!(a.len(), 22);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, cluster_id());
        // One id in 64 would start with `-` if nothing prevented it.
        assert!((0..2000).all(|_| !cluster_id().starts_with('-')));
    }

    #[test]
    fn the_configuration_listens_on_loopback_only() {
        let config = BrokerConfig {
            advertised_port: 29092,
            ..BrokerConfig::new(
                19092,
                19093,
                PathBuf::from("/data"),
                PathBuf::from("/b.log"),
            )
        };
        let properties = config.server_properties();
        for line in [
            "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
            "advertised.listeners=PLAINTEXT://127.0.0.1:29092",
            "controller.quorum.voters=1@127.0.0.1:19093",
            "log.dirs=/data/kraft-logs",
            "offsets.topic.replication.factor=1",
            "group.initial.rebalance.delay.ms=0",
        ] {
            assert!(
                properties.lines().any(|l| l == line),
                "{line} missing in:\n{properties}"
            );
        }
    }

    async fn started(dir: &ScratchDir) -> Broker {
        let installation = Installation::install().expect("Java and the Kafka jars");
        Broker::start_in(&installation, dir.path())
            .await
            .expect("the broker starts")
    }

    #[tokio::test]
    async fn starts_accepts_connections_and_stops() {
        let dir = ScratchDir::new("broker");
        let broker = started(&dir).await;
        let port = broker.port();
        tokio::net::TcpStream::connect(broker.address())
            .await
            .expect("the broker accepts TCP connections");
        // The listener accepts a moment before the broker logs that it has
        // started; the log must say so within seconds.
        let log = dir.path().join("broker.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut output = String::new();
        while Instant::now() < deadline {
            output = std::fs::read_to_string(&log).expect("the log");
            if output.contains("Kafka Server started") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            output.contains("Kafka Server started"),
            "the broker logs to its log file: {output}"
        );
        broker.stop().await.expect("a controlled shutdown");
        assert!(
            !crate::ports::in_use(port),
            "the port is free after the stop"
        );
    }

    #[tokio::test]
    async fn a_killed_broker_restarts_on_its_data() {
        let dir = ScratchDir::new("broker");
        let mut broker = started(&dir).await;
        broker.kill().expect("SIGKILL");
        let broker = broker.restart().await.expect("started again");
        let log = std::fs::read_to_string(dir.path().join("broker.log")).expect("the log");
        assert_eq!(
            log.matches("--- shipshape-testkit: starting broker")
                .count(),
            2,
            "one log, two starts"
        );
        broker.stop().await.expect("a controlled shutdown");
    }

    #[tokio::test]
    async fn refuses_a_port_that_is_in_use() {
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = taken.local_addr().expect("address").port();
        let dir = ScratchDir::new("broker");
        let installation = Installation::install().expect("Java and the Kafka jars");
        let config = BrokerConfig::new(
            port,
            crate::free_port(),
            dir.path().join("data"),
            dir.path().join("broker.log"),
        );
        let error = Broker::start(&installation, config)
            .await
            .expect_err("the port is taken");
        assert!(format!("{error:#}").contains("already in use"));
    }
}
