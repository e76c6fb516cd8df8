//! `cargo xtask test`: the one test command (README documents it, CI runs
//! it). Prepares what the end-to-end tests need, then hands over to nextest:
//!
//! 1. installs the broker if it is missing, and builds the persistent one
//!    the chaos test restarts (once per machine, about 13 minutes);
//! 2. finds (or starts) Postgres and drops databases left behind by test
//!    runs that were killed before they could clean up;
//! 3. builds the service binaries, which the tests start as processes, and
//!    the tests themselves;
//! 4. runs `cargo nextest run --workspace --no-fail-fast` with the extra
//!    arguments, and exits with its exit code.

use std::process::ExitCode;

use anyhow::{Context, bail};
use shipshape_testkit::stack::{BIN_DIR_VAR, TEST_DATABASE_PREFIX};
use shipshape_testkit::{broker, postgres};

use crate::workspace::{Workspace, cargo};

/// Runs the tests; `args` go to nextest unchanged (`--release` also selects
/// the release binaries).
pub async fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let release = args.iter().any(|arg| arg == "--release");
    let workspace = Workspace::load().await?;
    check_nextest().await?;

    let tansu = broker::install()?;
    let persistent_tansu = broker::install_persistent()?;
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

    eprintln!(
        "running cargo nextest run --workspace --no-fail-fast {}",
        args.join(" ")
    );
    let status = cargo()
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .args(&args)
        .current_dir(&workspace.root)
        // The tests find everything prepared above instead of probing again.
        .env(BIN_DIR_VAR, &bin_dir)
        .env(postgres::ADMIN_URL_VAR, &admin_url)
        .env(broker::TANSU_VAR, &tansu)
        .env(broker::PERSISTENT_TANSU_VAR, &persistent_tansu)
        .status()
        .await
        .context("running cargo nextest")?;
    if !status.success() {
        eprintln!(
            "tests failed; the stacks' process logs are in {}",
            test_logs.display()
        );
    }
    Ok(exit_code(status.code()))
}

/// Fails early, with the fix, when cargo-nextest is not installed.
async fn check_nextest() -> anyhow::Result<()> {
    let installed = cargo()
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success());
    if !installed {
        bail!("cargo-nextest is not installed: run `cargo install cargo-nextest --locked`");
    }
    Ok(())
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

    #[test]
    fn nextest_exit_codes_are_passed_on() {
        assert_eq!(exit_code(Some(0)), ExitCode::SUCCESS);
        assert_eq!(exit_code(Some(100)), ExitCode::from(100));
        assert_eq!(exit_code(None), ExitCode::FAILURE);
        assert_eq!(exit_code(Some(-1)), ExitCode::FAILURE);
    }
}
