//! `shipshape-chaos`: runs a chaos schedule on a stack of its own and
//! prints the report. Exits 0 when the run passed, 1 when an invariant was
//! violated or the system did not converge, 2 when the run could not happen.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shipshape_chaos::{RunnerOptions, Schedule, run};
use tokio::signal::unix::{SignalKind, signal};

/// Runs the checkout load on a stack of its own while applying a schedule's
/// faults, waits until the system is quiet, checks the saga's invariants
/// and prints the report.
#[derive(Debug, Parser)]
// A repeated option takes its last value, as the command line always has.
#[command(name = "shipshape-chaos", args_override_self = true)]
struct Cli {
    /// The load and the faults (see testing/chaos/schedules/)
    #[arg(value_name = "SCHEDULE.toml")]
    schedule: PathBuf,
    /// Where report.txt, report.json, load/ and logs/ go [default:
    /// chaos-<UTC time> in the current directory]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The service binaries [default: $SHIPSHAPE_BIN_DIR, else the directory
    /// of this executable]
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// No line per fault while the run goes
    #[arg(long)]
    quiet: bool,
}

impl Cli {
    /// The runner's options, the defaults filled in.
    fn runner_options(&self) -> anyhow::Result<RunnerOptions> {
        let bin_dir = match &self.bin_dir {
            Some(dir) => dir.clone(),
            None => shipshape_testkit::stack::default_bin_dir()?,
        };
        let out_dir = self.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!(
                "chaos-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            ))
        });
        Ok(RunnerOptions {
            bin_dir,
            out_dir,
            progress: !self.quiet,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = match cli.runner_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("shipshape-chaos: {e:#}");
            return ExitCode::from(2);
        }
    };
    let outcome = async {
        let schedule = Schedule::read(&cli.schedule)?;
        run(&schedule, &options).await
    };
    // Ctrl-C or SIGTERM drops the run, and with it the stack: every
    // process is killed and the run's databases are dropped.
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(e) => {
            eprintln!("shipshape-chaos: handling SIGTERM: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = tokio::select! {
        outcome = outcome => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted; the stack is stopped and its databases dropped");
            return ExitCode::from(130);
        }
        _ = terminate.recv() => {
            eprintln!("terminated; the stack is stopped and its databases dropped");
            return ExitCode::from(143);
        }
    };
    match outcome {
        Ok(report) => {
            print!("{}", report.render_text());
            println!("report: {}", options.out_dir.display());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("shipshape-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shipshape-chaos").chain(line.split_whitespace()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_schedule_and_the_options_of_cargo_xtask_chaos() {
        // What `cargo xtask chaos` passes.
        let cli = parse(
            "testing/chaos/schedules/ci.toml --out target/chaos/x --quiet --bin-dir target/release",
        )
        .expect("parsed");
        assert_eq!(cli.schedule, Path::new("testing/chaos/schedules/ci.toml"));
        let options = cli.runner_options().expect("options");
        assert_eq!(options.out_dir, Path::new("target/chaos/x"));
        assert_eq!(options.bin_dir, Path::new("target/release"));
        assert!(!options.progress);

        let cli = parse("long.toml --bin-dir bin").expect("parsed");
        let options = cli.runner_options().expect("options");
        assert!(options.progress);
        assert!(
            options.out_dir.to_string_lossy().starts_with("chaos-"),
            "{}",
            options.out_dir.display()
        );
    }

    #[test]
    fn one_schedule_and_only_known_options() {
        for line in ["", "a.toml b.toml", "a.toml --colour", "a.toml --out"] {
            assert!(parse(line).is_err(), "{line}");
        }
        let help = parse("--help").expect_err("help is no run");
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
    }
}
