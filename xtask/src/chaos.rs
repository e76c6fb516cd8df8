//! `cargo xtask chaos [SCHEDULE.toml] [--out DIR] [--quiet]`: a chaos run
//! with release binaries.
//!
//! 1. fetches the Kafka broker's jars once per machine (Maven, a few
//!    seconds, cached in `~/.cache/shipshape/kafka-<version>`);
//! 2. builds the release binaries;
//! 3. runs `shipshape-chaos` with the schedule (default
//!    `testing/chaos/schedules/ci.toml`), its report in `--out DIR` (default
//!    `<target>/chaos/<UTC timestamp>/`); exits with its exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use shipshape_testkit::broker;
use tokio::process::Command;

use crate::run_tests::exit_code;
use crate::workspace::Workspace;

/// Which schedule, and where its report goes.
#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// The load and the faults [default: testing/chaos/schedules/ci.toml;
    /// testing/chaos/schedules/long.toml is 10 000 orders]
    #[arg(value_name = "SCHEDULE.toml")]
    schedule: Option<PathBuf>,
    /// Where the report and the logs go [default: <target>/chaos/<UTC time>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// No line per fault while the run goes
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let workspace = Workspace::load().await?;
    let kafka = broker::Installation::install()?;
    workspace.build_binaries(true, false).await?;
    let bin_dir = workspace.bin_dir(true);
    let schedule = args
        .schedule
        .unwrap_or_else(|| workspace.root.join("testing/chaos/schedules/ci.toml"));
    let out = args.out.unwrap_or_else(|| {
        workspace
            .target_dir
            .join("chaos")
            .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
    });
    let mut chaos = Command::new(bin_dir.join("shipshape-chaos"));
    chaos.arg(&schedule).arg("--out").arg(&out);
    if args.quiet {
        chaos.arg("--quiet");
    }
    let status = chaos
        .arg("--bin-dir")
        .arg(&bin_dir)
        .env(broker::KAFKA_LIBS_VAR, kafka.libs())
        .status()
        .await
        .context("running shipshape-chaos")?;
    Ok(exit_code(status.code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, clap::Error> {
        match crate::parse(&format!("chaos {line}"))? {
            crate::Command::Chaos(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_schedule_an_out_dir_and_quiet_are_optional() {
        assert_eq!(
            parse("").expect("none"),
            Args {
                schedule: None,
                out: None,
                quiet: false,
            }
        );
        assert_eq!(
            parse("--out /tmp/c testing/chaos/schedules/long.toml --quiet").expect("all"),
            Args {
                schedule: Some(PathBuf::from("testing/chaos/schedules/long.toml")),
                out: Some(PathBuf::from("/tmp/c")),
                quiet: true,
            }
        );
        assert!(parse("a.toml b.toml").is_err());
        assert!(parse("--out").is_err());
    }
}
