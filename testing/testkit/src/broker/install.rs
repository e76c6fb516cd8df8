//! Installing the broker, once per machine: a Java runtime to run it on,
//! and its jars, which Maven fetches from Maven Central into a cache next
//! to the class-data-sharing archive.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};

use crate::process::run;

/// The Apache Kafka release every broker of ours runs; the same as
/// `deploy/kafka/pom.xml` (a test below checks) and the `apache/kafka`
/// image of docker-compose, the chart and `k8s/` (kept in step by hand).
pub const KAFKA_VERSION: &str = "4.4.0";

/// The Maven project that names the broker's jars.
const POM: &str = include_str!("../../../../deploy/kafka/pom.xml");

/// Environment variable naming a folder that already holds the broker's
/// jars (a machine without Maven, say); used instead of the cache.
pub const KAFKA_LIBS_VAR: &str = "SHIPSHAPE_KAFKA_LIBS";

/// The oldest Java the broker runs on (Kafka 4 needs 17).
const MIN_JAVA: u32 = 17;

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
    pub(super) archive: PathBuf,
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
    pub(super) fn java_command(
        &self,
        heap: &str,
        log4j2: &Path,
        record_to: Option<&Path>,
    ) -> Command {
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

#[cfg(test)]
mod tests;
