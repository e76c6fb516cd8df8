//! Where the workspace and its build output are, and building the service
//! binaries into them.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use tokio::process::Command;

/// The workspace as Cargo sees it (honouring `CARGO_TARGET_DIR` and any
/// Cargo configuration).
pub struct Workspace {
    /// The directory of the workspace's `Cargo.toml`.
    pub root: PathBuf,
    /// Cargo's target directory.
    pub target_dir: PathBuf,
}

impl Workspace {
    /// Asks `cargo metadata` about the workspace xtask belongs to.
    pub async fn load() -> anyhow::Result<Self> {
        // `cargo run` sets CARGO_MANIFEST_DIR for the process it starts; the
        // value baked in at compile time is only a fallback. Clones sharing
        // one target directory may run an xtask binary compiled in another
        // clone, which must still act on the clone it was invoked from.
        let package_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let manifest = package_dir.join("../Cargo.toml");
        let output = cargo()
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--manifest-path",
            ])
            .arg(&manifest)
            .output()
            .await
            .context("running cargo metadata")?;
        if !output.status.success() {
            bail!(
                "cargo metadata failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let metadata: Value =
            serde_json::from_slice(&output.stdout).context("parsing cargo metadata's output")?;
        let path = |key: &str| {
            metadata[key]
                .as_str()
                .map(PathBuf::from)
                .ok_or_else(|| anyhow!("cargo metadata's output has no {key}"))
        };
        Ok(Self {
            root: path("workspace_root")?,
            target_dir: path("target_directory")?,
        })
    }

    /// Where `cargo build` puts binaries of the given profile.
    pub fn bin_dir(&self, release: bool) -> PathBuf {
        self.target_dir
            .join(if release { "release" } else { "debug" })
    }

    /// The folder a run writes its logs and reports to: `out` when given,
    /// else `<target>/<kind>/<UTC time>`; made if missing, as an absolute
    /// path (the processes started in it run elsewhere).
    pub fn run_dir(&self, kind: &str, out: Option<PathBuf>) -> anyhow::Result<PathBuf> {
        let out = out.unwrap_or_else(|| {
            self.target_dir
                .join(kind)
                .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
        });
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        out.canonicalize()
            .with_context(|| format!("resolving {}", out.display()))
    }

    /// Builds every binary of the workspace (the services among them);
    /// with `with_tests`, the test targets too.
    pub async fn build_binaries(&self, release: bool, with_tests: bool) -> anyhow::Result<()> {
        let mut args = vec!["build", "--workspace", "--bins"];
        // Tests turn on dev-dependency features (tokio's `test-util`);
        // building bins and tests in one invocation resolves features once,
        // so the test run that follows reuses these artifacts instead of
        // compiling the dependency graph a second time.
        if with_tests {
            args.push("--tests");
        }
        if release {
            args.push("--release");
        }
        eprintln!("building the service binaries (cargo {})", args.join(" "));
        let status = cargo()
            .args(&args)
            .current_dir(&self.root)
            .status()
            .await
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build failed ({status})");
        }
        Ok(())
    }
}

/// The cargo that runs us (`CARGO`), or the one on PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
