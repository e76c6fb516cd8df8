//! `shipshape-chaos SCHEDULE.toml [--out DIR] [--bin-dir DIR] [--quiet]`:
//! runs a chaos schedule on a stack of its own and prints the report.
//! Exits 0 when the run passed, 1 when an invariant was violated or the
//! system did not converge, 2 when the run could not happen.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use shipshape_chaos::{RunnerOptions, Schedule, run};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: shipshape-chaos SCHEDULE.toml [--out DIR] [--bin-dir DIR] [--quiet]

  SCHEDULE.toml  the load and the faults (see chaos/schedules/)
  --out DIR      where report.txt, report.json, load/ and logs/ go
                 (default: chaos-<UTC time> in the current directory)
  --bin-dir DIR  the service binaries (default: SHIPSHAPE_BIN_DIR, else
                 the directory of this executable)
  --quiet        no line per fault while the run goes";

struct Args {
    schedule: PathBuf,
    options: RunnerOptions,
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let (mut schedule, mut out, mut bin_dir, mut progress) = (None, None, None, true);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => {
                out = Some(PathBuf::from(
                    args.next().context("--out needs a directory")?,
                ))
            }
            "--bin-dir" => {
                bin_dir = Some(PathBuf::from(
                    args.next().context("--bin-dir needs a directory")?,
                ))
            }
            "--quiet" => progress = false,
            _ if arg.starts_with('-') => bail!("unknown option {arg}"),
            _ if schedule.is_none() => schedule = Some(PathBuf::from(arg)),
            _ => bail!("one schedule at a time; `{arg}` is a second one"),
        }
    }
    let bin_dir = match bin_dir {
        Some(dir) => dir,
        None => shipshape_testkit::stack::default_bin_dir()?,
    };
    let out_dir = out.unwrap_or_else(|| {
        PathBuf::from(format!(
            "chaos-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ))
    });
    Ok(Args {
        schedule: schedule.context("which schedule? name a TOML file")?,
        options: RunnerOptions {
            bin_dir,
            out_dir,
            progress,
        },
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = async {
        let schedule = Schedule::read(&args.schedule)?;
        run(&schedule, &args.options).await
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
            println!("report: {}", args.options.out_dir.display());
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
