//! `cargo xtask chaos [SCHEDULE.toml] [--out DIR] [--quiet]`: a chaos run
//! with release binaries.
//!
//! 1. fetches the Kafka broker's jars once per machine (Maven, a few
//!    seconds, cached in `~/.cache/shipshape/kafka-<version>`);
//! 2. builds the release binaries;
//! 3. runs `shipshape-chaos` with the schedule (default
//!    `chaos/schedules/ci.toml`), its report in `--out DIR` (default
//!    `<target>/chaos/<UTC timestamp>/`); exits with its exit code.

use std::process::ExitCode;

use anyhow::Context;
use shipshape_testkit::broker;
use tokio::process::Command;

use crate::run_tests::exit_code;
use crate::workspace::Workspace;

pub async fn run(mut args: Vec<String>) -> anyhow::Result<ExitCode> {
    let workspace = Workspace::load().await?;
    let kafka = broker::Installation::install()?;
    workspace.build_binaries(true, false).await?;
    let bin_dir = workspace.bin_dir(true);
    let names_schedule = args
        .iter()
        .enumerate()
        .any(|(i, arg)| !arg.starts_with('-') && (i == 0 || args[i - 1] != "--out"));
    if !names_schedule {
        let default = workspace.root.join("chaos/schedules/ci.toml");
        args.insert(0, default.display().to_string());
    }
    if !args.iter().any(|arg| arg == "--out") {
        let out = workspace
            .target_dir
            .join("chaos")
            .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
        args.extend(["--out".to_owned(), out.display().to_string()]);
    }
    let status = Command::new(bin_dir.join("shipshape-chaos"))
        .args(&args)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .env(broker::KAFKA_LIBS_VAR, kafka.libs())
        .status()
        .await
        .context("running shipshape-chaos")?;
    Ok(exit_code(status.code()))
}
