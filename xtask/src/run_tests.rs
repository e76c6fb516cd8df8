//! `cargo xtask test`: the one test command (README.md and docs/testing.md
//! document it, CI runs it). Prepares what the end-to-end tests need, then
//! hands over to nextest:
//!
//! 0. installs the pinned cargo-nextest into `~/.cache/shipshape/tools` when
//!    no cargo-nextest is on PATH (once per machine, a few minutes);
//! 1. fetches the Kafka broker's jars with Maven if they are not cached
//!    (once per machine, a few seconds), after checking Java is there;
//! 2. finds (or starts) Postgres and drops databases left behind by test
//!    runs that were killed before they could clean up;
//! 3. builds the service binaries, which the tests start as processes, and
//!    the tests themselves;
//! 4. starts one Kafka broker for the whole run, which the tests share
//!    (each stack under a topic prefix of its own; see
//!    [`broker::SHARED_BROKER_VAR`]), so no test but those that kill or cut
//!    off a broker waits for a JVM of its own;
//! 5. runs `cargo nextest run --workspace --no-fail-fast` with the extra
//!    arguments, stops the broker, and exits with nextest's exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use shipshape_testkit::stack::{BIN_DIR_VAR, TEST_DATABASE_PREFIX};
use shipshape_testkit::{broker, postgres};

use crate::workspace::{Workspace, cargo};

/// What `cargo xtask test` hands to nextest.
#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// Passed on to cargo nextest run unchanged, e.g. -E 'binary(replicas)'
    /// --no-capture; --release also selects the release binaries. A leading
    /// -- is taken as the end of cargo xtask's options: write -- -- to pass
    /// one on
    // Every argument is nextest's, even one such as --help after the first.
    #[arg(
        value_name = "NEXTEST_ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    nextest: Vec<String>,
}

/// Runs the tests with nextest.
pub async fn run(Args { nextest: args }: Args) -> anyhow::Result<ExitCode> {
    let release = args.iter().any(|arg| arg == "--release");
    let workspace = Workspace::load().await?;
    let path = nextest_path().await?;

    let kafka = broker::Installation::install()?;
    let admin_url = postgres::ensure_server().await?;
    let stale = postgres::drop_stale_test_databases(&admin_url, TEST_DATABASE_PREFIX).await?;
    if !stale.is_empty() {
        eprintln!(
            "dropped {} database(s) left behind by earlier test runs",
            stale.len()
        );
    }

    workspace.build_binaries(release, true).await?;
    let bin_dir = workspace.bin_dir(release);
    // Each run's logs replace the last run's, so they never pile up.
    let test_logs = bin_dir.join("test-logs");
    if test_logs.exists() {
        std::fs::remove_dir_all(&test_logs)
            .with_context(|| format!("removing old test logs in {}", test_logs.display()))?;
    }

    let shared_dir = test_logs.join("shared-broker");
    let started = std::time::Instant::now();
    let mut shared = broker::Broker::start_in(&kafka, &shared_dir)
        .await
        .context("starting the Kafka broker the tests share")?;
    eprintln!(
        "the tests share the Kafka broker at {} (started in {:.1} s; log {})",
        shared.address(),
        started.elapsed().as_secs_f64(),
        shared.log_path().display()
    );

    eprintln!(
        "running cargo nextest run --workspace --no-fail-fast {}",
        args.join(" ")
    );
    let status = cargo()
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .args(&args)
        .current_dir(&workspace.root)
        .env("PATH", &path)
        // The tests find everything prepared above instead of probing again.
        .env(BIN_DIR_VAR, &bin_dir)
        .env(postgres::ADMIN_URL_VAR, &admin_url)
        .env(broker::KAFKA_LIBS_VAR, kafka.libs())
        .env(broker::SHARED_BROKER_VAR, shared.address())
        .env(
            broker::SHARED_BROKER_PASSWORD_VAR,
            shared.admin_password().expose(),
        )
        .status()
        .await
        .context("running cargo nextest")?;
    // A broker that died under the tests explains their failures.
    if let Some(exited) = shared.exit_status()? {
        eprintln!(
            "the shared Kafka broker exited during the run ({exited}); its log: {}",
            shared.log_path().display()
        );
    } else if let Err(e) = shared.stop().await {
        eprintln!("the shared Kafka broker did not stop cleanly: {e:#}");
    }
    if !status.success() {
        eprintln!(
            "tests failed; the stacks' process logs are in {}",
            test_logs.display()
        );
    }
    Ok(exit_code(status.code()))
}

/// The cargo-nextest `cargo xtask test` installs when none is on PATH.
const NEXTEST_VERSION: &str = "0.9.151";

/// A PATH under which `cargo nextest` runs: the caller's when it already
/// finds cargo-nextest, else the caller's behind the tools folder, after
/// installing the pinned version there if it is not yet.
async fn nextest_path() -> anyhow::Result<std::ffi::OsString> {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    if nextest_runs(&inherited).await {
        return Ok(inherited);
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let tools = std::env::var_os("SHIPSHAPE_TOOLS_DIR").map_or_else(
        || PathBuf::from(home).join(".cache/shipshape/tools"),
        PathBuf::from,
    );
    let mut dirs = vec![tools.join("bin")];
    dirs.extend(std::env::split_paths(&inherited));
    let path = std::env::join_paths(dirs).context("PATH holds a folder with a ':' in its name")?;
    if nextest_runs(&path).await {
        return Ok(path);
    }
    eprintln!(
        "installing cargo-nextest {NEXTEST_VERSION} into {} (once per machine)",
        tools.display()
    );
    let status = cargo()
        .args(["install", "cargo-nextest", "--locked", "--force"])
        .args(["--version", &format!("={NEXTEST_VERSION}")])
        .arg("--root")
        .arg(&tools)
        // Its own target folder, so the workspace's is not rebuilt; thin
        // release settings: a test runner does not need fat LTO on 2 cores.
        .env("CARGO_TARGET_DIR", tools.with_file_name("tools-target"))
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .status()
        .await
        .context("running cargo install cargo-nextest")?;
    if !status.success() || !nextest_runs(&path).await {
        bail!(
            "cannot install cargo-nextest {NEXTEST_VERSION} ({status}); install it with \
             `cargo install cargo-nextest --locked` and run again"
        );
    }
    Ok(path)
}

/// Whether `cargo nextest --version` succeeds under `path`.
async fn nextest_runs(path: &std::ffi::OsStr) -> bool {
    cargo()
        .args(["nextest", "--version"])
        .env("PATH", path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

/// The child's exit code as ours; 1 when it has none (killed by a signal)
/// or it does not fit.
pub(crate) fn exit_code(code: Option<i32>) -> ExitCode {
    code.and_then(|code| u8::try_from(code).ok())
        .map_or(ExitCode::FAILURE, ExitCode::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Vec<String>, clap::Error> {
        match crate::parse(&format!("test {line}"))? {
            crate::Command::Test(args) => Ok(args.nextest),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_argument_goes_to_nextest() {
        assert_eq!(parse("").expect("none"), Vec::<String>::new());
        // As README.md and docs/ show it.
        assert_eq!(
            parse("-E binary(replicas) --no-capture").expect("a filter"),
            ["-E", "binary(replicas)", "--no-capture"]
        );
        assert_eq!(
            parse("--release --no-fail-fast -j 1").expect("flags"),
            ["--release", "--no-fail-fast", "-j", "1"]
        );
        assert_eq!(
            parse("stack --help").expect("a filter, then nextest's --help"),
            ["stack", "--help"]
        );
        assert_eq!(
            parse("-- -- --exact").expect("test binary arguments"),
            ["--", "--exact"]
        );
        let help = parse("--help").expect_err("help first is xtask's");
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn nextest_exit_codes_are_passed_on() {
        assert_eq!(exit_code(Some(0)), ExitCode::SUCCESS);
        assert_eq!(exit_code(Some(100)), ExitCode::from(100));
        assert_eq!(exit_code(None), ExitCode::FAILURE);
        assert_eq!(exit_code(Some(-1)), ExitCode::FAILURE);
    }
}
