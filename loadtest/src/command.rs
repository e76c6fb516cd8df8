//! Carries out a parsed [`Command`]: runs the load, samples the processes,
//! runs the baseline, and prints and writes the report.

use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;

use crate::baseline::{self, BaselineOptions};
use crate::capacity::{self, CapacityReport};
use crate::cli::{CapacityCommand, Cli, Command, LoadCommand};
use crate::cost::{self, CostReport};
use crate::procstat::Sampler;
use crate::report::{BaselineComparison, Machine, Report};
use crate::run::{self, Load, RunReport};
use crate::schedule::{Rate, Schedule};
use crate::sequential;

/// Runs `command`; the report goes to stdout (and to `--out`), progress and
/// warnings to stderr.
pub async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Help => Cli::command().print_help()?,
        Command::Sequential(options) => {
            print!("{}", sequential::run(&options).await?.render());
        }
        Command::Baseline(options, out) => {
            let baseline = run_baseline(&options).await?;
            let text = format!(
                "baseline: {:.1} checkout transactions/s ({} in {:.0} s, {} clients, {} failed)\n",
                baseline.tps,
                baseline.transactions,
                baseline.duration_secs,
                baseline.clients,
                baseline.failed_transactions
            );
            print!("{text}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(
                    dir.join("baseline.json"),
                    serde_json::to_string_pretty(&baseline)?,
                )?;
            }
        }
        Command::Run(load) => {
            let started_at = now();
            let before = match load.cost.is_empty() {
                true => None,
                false => Some(cost::snapshot(&load.cost).await?),
            };
            let sampler = Sampler::start(load.watch.clone());
            let report = run::run(&load.options).await?;
            let processes = sampler.finish().await;
            let cost = match before {
                Some(before) => {
                    let after = cost::snapshot_after_run(&load.cost).await?;
                    Some(cost::cost(
                        &before,
                        &after,
                        report.totals.terminal,
                        &processes,
                    ))
                }
                None => None,
            };
            let rate = report.totals.throughput;
            finish(
                &load,
                "run",
                started_at,
                Measured {
                    run: Some(report),
                    capacity: None,
                    processes,
                    cost,
                },
                rate,
            )
            .await?;
        }
        Command::Capacity(capacity) => execute_capacity(capacity).await?,
    }
    Ok(())
}

async fn execute_capacity(command: CapacityCommand) -> anyhow::Result<()> {
    let started_at = now();
    let load = &command.load;
    let sampler = Sampler::start(load.watch.clone());
    let found = capacity::find(
        &load.options,
        command.steps,
        command.step_duration,
        command.warmup,
        command.slo,
        &load.watch,
    )
    .await?;
    let half = match (command.half_rate, found.sustainable_rate) {
        (Some(duration), Some(rate)) => Some(run_at_half(load, rate, duration).await?),
        (Some(_), None) => {
            eprintln!("no sustainable rate was found, so there is no half-rate run");
            None
        }
        (None, _) => None,
    };
    let processes = sampler.finish().await;
    let rate = found.sustainable_rate.unwrap_or(0.0);
    finish(
        load,
        "capacity",
        started_at,
        Measured {
            run: half,
            capacity: Some(found),
            processes,
            cost: None,
        },
        rate,
    )
    .await
}

/// What a command measured, for the report.
struct Measured {
    run: Option<RunReport>,
    capacity: Option<CapacityReport>,
    processes: Vec<crate::procstat::ProcessReport>,
    cost: Option<CostReport>,
}

/// An open-model run at half the sustainable rate: the latencies a system
/// with room to spare shows.
async fn run_at_half(
    load: &LoadCommand,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<RunReport> {
    let half = Rate::new(rate / 2.0)?;
    eprintln!("half-rate run: {half} for {} s", duration.as_secs());
    let mut options = load.options.clone();
    options.load = Load::Open(Schedule::constant(half, duration));
    options.ramp = Duration::ZERO;
    run::run(&options).await
}

/// The baseline (if asked for), the report on stdout and in `--out`.
async fn finish(
    load: &LoadCommand,
    command: &str,
    started_at: String,
    Measured {
        run,
        capacity,
        processes,
        cost,
    }: Measured,
    saga_rate: f64,
) -> anyhow::Result<()> {
    let baseline = match &load.baseline {
        Some(options) => Some(BaselineComparison::new(
            run_baseline(options).await?,
            saga_rate,
        )),
        None => None,
    };
    let report = Report {
        tool: concat!("shipshape-loadtest ", env!("CARGO_PKG_VERSION")).to_owned(),
        started_at,
        command: command.to_owned(),
        gateway: load.options.gateway.clone(),
        machine: Machine::detect(),
        run,
        capacity,
        baseline,
        processes,
        cost,
    };
    print!("{}", report.render_text());
    if let Some(dir) = &load.out {
        report.write(dir)?;
        eprintln!("report written to {}", display(dir));
    }
    Ok(())
}

async fn run_baseline(options: &BaselineOptions) -> anyhow::Result<baseline::BaselineReport> {
    eprintln!(
        "baseline: pgbench, {} clients for {} s in a scratch database",
        options.clients,
        options.duration.as_secs()
    );
    baseline::run(options).await
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn display(dir: &Path) -> String {
    format!("{}/report.{{txt,json,svg}}", dir.display())
}
