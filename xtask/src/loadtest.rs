//! `cargo xtask loadtest`: the load test against a stack of its own.
//!
//! 1. builds the release binaries (the load generator among them: numbers
//!    from debug builds would measure the compiler's settings);
//! 2. starts the whole stack on free ports with fresh databases
//!    (`shipshape_lt<8 hex>_*`, dropped afterwards), the PSP simulator and
//!    the broker, with a random token secret, of which the load test gets
//!    a customer's token and an admin token (to restock), and with the
//!    gateway's per-client rate limit far above the test's rate (the
//!    generator is a single customer);
//! 3. runs `shipshape-loadtest <command>` against the gateway, watching the
//!    memory and CPU of every process of the stack and of the stack's
//!    Postgres backends; with `--baseline` the pgbench baseline runs on the
//!    same Postgres afterwards, in the same report;
//! 4. stops the stack (gateway first, broker last).
//!
//! The report goes to `--out DIR` (default
//! `<target>/loadtest/<UTC timestamp>/`), the stack's logs to `DIR/logs/`.
//!
//! `--tracing on` has every service export its spans to an OTLP collector
//! in this process; `--tracing compare` runs `run` twice, tracing off then
//! on, each on a fresh stack, into `DIR/tracing-off` and `DIR/tracing-on`,
//! and prints the two side by side (also in `DIR/tracing-overhead.txt`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use shipshape_testkit::otlp::Collector;
use shipshape_testkit::stack::{Service, Stack, StackOptions};
use shipshape_testkit::{auth, broker, postgres};
use tokio::process::Command;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::run_tests::exit_code;
use crate::workspace::Workspace;

/// How long the load test's tokens are valid.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What `cargo xtask loadtest` takes for itself, before the load test's
/// first argument; the rest goes to `shipshape-loadtest COMMAND`.
#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// Run the pgbench baseline afterwards, on the same Postgres, into the
    /// same report
    #[arg(long)]
    baseline: bool,
    /// Whether the services export traces during the load
    #[arg(long, value_enum, default_value_t = Tracing::Off)]
    tracing: Tracing,
    /// Whether the broker wants logins and checks ACLs and gRPC runs over
    /// mutual TLS, as everywhere else
    #[arg(long, value_enum, default_value_t = Security::On)]
    security: Security,
    /// With the security on, the broker's listener is SASL_SSL (TLS), as
    /// in the chart's production values, not SASL_PLAINTEXT
    #[arg(long)]
    broker_tls: bool,
    /// Run the command twice, each on a fresh stack, first as configured,
    /// then with this environment variable set in every service
    /// (repeatable), and compare: what a setting buys
    #[arg(long, value_name = "NAME=VALUE", value_parser = env_setting)]
    compare_env: Vec<(String, String)>,
    /// Run the command twice, each on a fresh stack, first with the
    /// binaries this command builds, then with the stack's binaries from
    /// DIR (another build of them, such as other release settings), and
    /// compare: what a build buys
    #[arg(long, value_name = "DIR")]
    compare_bin_dir: Option<PathBuf>,
    /// Replicas of each saga service, from 1 to 8; with a list such as 1,2
    /// the command runs once per count, each on a fresh stack, and the
    /// reports are printed side by side
    // Spelled out so that clap takes the list as one value, not as one value
    // per occurrence of the flag.
    #[arg(long, value_name = "N[,M...]", default_value = "1", value_parser = parse_replicas)]
    replicas: std::vec::Vec<usize>,
    /// Where the report and the stack's logs go [default:
    /// <target>/loadtest/<UTC time>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// What shipshape-loadtest runs
    #[arg(value_enum, default_value_t = LoadCommand::Run)]
    command: LoadCommand,
    /// Passed on to shipshape-loadtest COMMAND (see shipshape-loadtest COMMAND
    /// --help)
    // From the first, every argument is the load test's, --help included.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    rest: Vec<String>,
}

/// What `cargo xtask loadtest` has `shipshape-loadtest` do.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum LoadCommand {
    /// Drive checkouts through the gateway and report
    Run,
    /// Step the arrival rate up until the SLO breaks
    Capacity,
    /// Place orders one at a time
    Sequential,
    /// The one-transaction baseline with pgbench
    Baseline,
}

impl LoadCommand {
    /// Its name on `shipshape-loadtest`'s command line.
    fn name(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Capacity => "capacity",
            Self::Sequential => "sequential",
            Self::Baseline => "baseline",
        }
    }
}

/// Whether the services export traces during the load (`--tracing`).
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Tracing {
    /// No exporter runs in the services
    Off,
    /// Every span is exported to an OTLP collector in xtask
    On,
    /// The run command twice, off then on, each on a fresh stack, compared:
    /// the overhead of tracing
    Compare,
}

/// Whether the broker and gRPC are secured during the load (`--security`).
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Security {
    /// SASL/SCRAM logins and ACLs on the broker, mutual TLS on gRPC
    On,
    /// A PLAINTEXT broker that checks no one, and gRPC in the clear
    Off,
    /// The command twice, off then on, each on a fresh stack, compared:
    /// what the security costs
    Compare,
}

/// `KAFKA_FETCH_WAIT_MS=500`: an environment variable for every service.
fn env_setting(spec: &str) -> Result<(String, String), String> {
    let (name, value) = spec.split_once('=').ok_or("expected NAME=VALUE")?;
    let well_formed = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(format!(
            "`{name}` is not an environment variable's name (A-Z, 0-9, _)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// The most replicas of a service a load test runs.
const MAX_REPLICAS: usize = 8;

/// `1,2`: each count once, from 1 to [`MAX_REPLICAS`].
fn parse_replicas(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut counts = Vec::new();
    for item in list.split(',') {
        let count = item
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=MAX_REPLICAS).contains(n))
            .with_context(|| format!("expected counts from 1 to {MAX_REPLICAS}, not {item:?}"))?;
        if counts.contains(&count) {
            bail!("{count} is named twice");
        }
        counts.push(count);
    }
    Ok(counts)
}

/// This command's own flags, which the load test does not take.
const OWN_FLAGS: [&str; 8] = [
    "--baseline",
    "--tracing",
    "--security",
    "--broker-tls",
    "--compare-env",
    "--compare-bin-dir",
    "--replicas",
    "--out",
];

impl Args {
    /// Fails on flags that clap takes one by one but that do not go
    /// together.
    fn check(&self) -> anyhow::Result<()> {
        let command = self.command.name();
        // Before clap, these were taken anywhere on the line; after the
        // load test's first argument they would now reach the load test,
        // which fails only after the build and the start-up (or, for --out,
        // writes the report away from the logs).
        if let Some(flag) = self.rest.iter().find_map(|arg| {
            OWN_FLAGS.into_iter().find(|flag| {
                arg.strip_prefix(flag)
                    .is_some_and(|v| v.is_empty() || v.starts_with('='))
            })
        }) {
            bail!("{flag} is an option of `cargo xtask loadtest`: put it before `{command}`");
        }
        let comparing = self.replicas.len() > 1;
        if comparing && !matches!(self.command, LoadCommand::Run | LoadCommand::Capacity) {
            bail!(
                "--replicas with several counts compares `run` or `capacity` reports, not `{command}`"
            );
        }
        if self.tracing == Tracing::Compare
            && (self.command != LoadCommand::Run || self.baseline || comparing)
        {
            bail!(
                "--tracing compare runs `run` twice; it takes no other command, no --baseline and \
                 one replica count"
            );
        }
        let given: Vec<&str> = [
            ("--compare-env", !self.compare_env.is_empty()),
            ("--compare-bin-dir", self.compare_bin_dir.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, present)| present.then_some(flag))
        .collect();
        if let Some(flag) = given.first()
            && (given.len() > 1
                || !matches!(self.command, LoadCommand::Run | LoadCommand::Capacity)
                || self.baseline
                || comparing
                || self.tracing == Tracing::Compare
                || self.security == Security::Compare)
        {
            bail!(
                "{flag} runs `run` or `capacity` twice; it takes no --baseline, one replica \
                 count and no other comparison"
            );
        }
        if self.broker_tls && self.security == Security::Off {
            bail!("--broker-tls secures the broker's listener: it needs --security on or compare");
        }
        if self.security == Security::Compare
            && (!matches!(self.command, LoadCommand::Run | LoadCommand::Capacity)
                || self.baseline
                || comparing
                || self.tracing == Tracing::Compare)
        {
            bail!(
                "--security compare runs `run` or `capacity` twice; it takes no --baseline, one \
                 replica count and no --tracing compare"
            );
        }
        Ok(())
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.check()?;
    let workspace = Workspace::load().await?;
    workspace.build_binaries(true, false).await?;
    let bin_dir = workspace.bin_dir(true);
    let loadtest = bin_dir.join("shipshape-loadtest");
    let out = workspace.run_dir("loadtest", args.out.clone())?;
    let admin_url = postgres::ensure_server().await?;

    if args.command == LoadCommand::Baseline {
        let status = Command::new(&loadtest)
            .arg("baseline")
            .args(["--database-url", &admin_url])
            .arg("--out")
            .arg(&out)
            .args(&args.rest)
            .status()
            .await
            .context("running shipshape-loadtest")?;
        return Ok(exit_code(status.code()));
    }

    broker::Installation::install()?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let secured = args.security != Security::Off;
    if args.security == Security::Compare {
        let traced = args.tracing == Tracing::On;
        let replicas = args.replicas[0];
        let runs = [
            (
                "security-off",
                Run {
                    traced,
                    secured: false,
                    replicas,
                    with_env: false,
                    other_build: false,
                },
            ),
            (
                "security-on",
                Run {
                    traced,
                    secured: true,
                    replicas,
                    with_env: false,
                    other_build: false,
                },
            ),
        ];
        let file = "security-cost.txt";
        return off_then_on(&args, &bin_dir, &out, runs, file, &mut interrupt).await;
    }
    // What --compare-env or --compare-bin-dir changes in the second run.
    let compared = if !args.compare_env.is_empty() {
        Some(("as-configured", "with-env", "env-comparison.txt"))
    } else if let Some(other) = &args.compare_bin_dir {
        check_binaries(other)?;
        Some(("as-built", "other-build", "build-comparison.txt"))
    } else {
        None
    };
    if let Some((first, second, file)) = compared {
        let run = Run {
            traced: args.tracing == Tracing::On,
            secured,
            replicas: args.replicas[0],
            with_env: false,
            other_build: false,
        };
        let changed = Run {
            with_env: !args.compare_env.is_empty(),
            other_build: args.compare_bin_dir.is_some(),
            ..run
        };
        let runs = [(first, run), (second, changed)];
        return off_then_on(&args, &bin_dir, &out, runs, file, &mut interrupt).await;
    }
    if let [replicas] = args.replicas[..]
        && args.tracing != Tracing::Compare
    {
        let status = run_once(
            &args,
            &bin_dir,
            &out,
            Run {
                traced: args.tracing == Tracing::On,
                secured,
                replicas,
                with_env: false,
                other_build: false,
            },
            &mut interrupt,
        )
        .await?;
        return Ok(exit_code(status));
    }
    if args.tracing != Tracing::Compare {
        // One run per replica count, in the order given, each on a fresh
        // stack and fresh databases.
        let mut reports = Vec::new();
        for &replicas in &args.replicas {
            let name = format!("replicas-{replicas}");
            let dir = out.join(&name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let run = Run {
                traced: args.tracing == Tracing::On,
                secured,
                replicas,
                with_env: false,
                other_build: false,
            };
            let status = run_once(&args, &bin_dir, &dir, run, &mut interrupt).await?;
            if status != Some(0) {
                eprintln!("the run with {replicas} replicas failed; not comparing");
                return Ok(exit_code(status));
            }
            reports.push((name, read_report(&dir)?));
        }
        let named: Vec<(&str, Value)> = reports
            .iter()
            .map(|(name, report)| (name.as_str(), report.clone()))
            .collect();
        let comparison = compare(&named, rows_for(args.command));
        println!("{comparison}");
        std::fs::write(out.join("replicas.txt"), &comparison).context("writing replicas.txt")?;
        return Ok(ExitCode::SUCCESS);
    }
    let replicas = args.replicas[0];
    let runs = [
        (
            "tracing-off",
            Run {
                traced: false,
                secured,
                replicas,
                with_env: false,
                other_build: false,
            },
        ),
        (
            "tracing-on",
            Run {
                traced: true,
                secured,
                replicas,
                with_env: false,
                other_build: false,
            },
        ),
    ];
    off_then_on(
        &args,
        &bin_dir,
        &out,
        runs,
        "tracing-overhead.txt",
        &mut interrupt,
    )
    .await
}

/// The command twice, as `runs` say, each on a fresh stack and fresh
/// databases with the same load, then the two reports side by side, also
/// written to `file` in `out`.
async fn off_then_on(
    args: &Args,
    bin_dir: &Path,
    out: &Path,
    runs: [(&'static str, Run); 2],
    file: &str,
    interrupt: &mut Signal,
) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for (name, run) in runs {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let status = run_once(args, bin_dir, &dir, run, interrupt).await?;
        if status != Some(0) {
            eprintln!("the {name} run failed; not comparing");
            return Ok(exit_code(status));
        }
        reports.push((name, read_report(&dir)?));
    }
    let comparison = compare(&reports, rows_for(args.command));
    println!("{comparison}");
    std::fs::write(out.join(file), &comparison).with_context(|| format!("writing {file}"))?;
    Ok(ExitCode::SUCCESS)
}

/// How one stack of a load test runs.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Every service exports its spans to a collector in this process.
    traced: bool,
    /// The broker wants logins and gRPC runs over mutual TLS.
    secured: bool,
    /// Replicas of each saga service.
    replicas: usize,
    /// Every service gets the `--compare-env` settings.
    with_env: bool,
    /// The stack runs the binaries of `--compare-bin-dir`.
    other_build: bool,
}

/// Starts a stack, runs `shipshape-loadtest` against it with its report in
/// `out`, stops the stack; returns the load test's exit code. A traced
/// run prints the collector's span count at the end.
async fn run_once(
    args: &Args,
    bin_dir: &Path,
    out: &Path,
    Run {
        traced,
        secured,
        replicas,
        with_env,
        other_build,
    }: Run,
    interrupt: &mut Signal,
) -> anyhow::Result<Option<i32>> {
    let admin_url = postgres::ensure_server().await?;
    // Every order of the load test is one customer's, whom the gateway's
    // per-client rate limit (100/s by default) counts as one client: it
    // would measure the limit, not the checkout. The limiter stays on, so
    // its cost is measured, but far above the test's rate.
    let stack_bin_dir = match (&args.compare_bin_dir, other_build) {
        (Some(other), true) => other.as_path(),
        _ => bin_dir,
    };
    let mut options = StackOptions::scratch(stack_bin_dir, out.join("logs"), "lt")?
        .with_client_limits_out_of_reach()
        .with_replicas(replicas, replicas);
    options.grpc_tls = secured;
    options.broker_security = secured;
    options.broker_tls = secured && args.broker_tls;
    if with_env {
        for service in Service::ALL {
            for (name, value) in &args.compare_env {
                options = options.with_env(service, name.clone(), value.clone());
            }
        }
    }
    let prefix = options.database_prefix.clone();
    let collector = if traced {
        let collector = Collector::start().await?;
        for service in Service::ALL {
            options =
                options.with_env(service, "OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint());
        }
        Some(collector)
    } else {
        None
    };
    eprintln!(
        "starting the stack, {replicas} replica(s) of each saga service, tracing {}, security {} \
         (logs in {})",
        if traced { "on" } else { "off" },
        match (secured, args.broker_tls) {
            (false, _) => "off",
            (true, false) => "on",
            (true, true) => "on, the broker over TLS",
        },
        out.join("logs").display()
    );
    let stack_secret = options.jwt_secret.clone();
    let stack = tokio::select! {
        started = Stack::start(options) => started?,
        _ = interrupt.recv() => bail!("interrupted during start-up"),
    };

    // Valid for a day: a long capacity search must not outlive its tokens.
    let minter = auth::minter(&stack_secret)?;
    let mut command = Command::new(bin_dir.join("shipshape-loadtest"));
    command
        .arg(args.command.name())
        .args(["--gateway", &stack.gateway_url()])
        .env(
            "SHIPSHAPE_ADMIN_TOKEN",
            minter.mint("loadtest-operator", &["admin"], TOKEN_TTL)?,
        )
        .env(
            "SHIPSHAPE_TOKEN",
            minter.mint("loadtest-customer", &[], TOKEN_TTL)?,
        );
    if args.command != LoadCommand::Sequential {
        command.arg("--out").arg(out);
        for replica in stack.replicas() {
            if let Some(pid) = stack.pid(replica) {
                command.args(["--watch", &format!("{}={pid}", replica.name())]);
            }
        }
        if let Some(pid) = stack.broker_pid() {
            command.args(["--watch", &format!("broker={pid}")]);
        }
        command.args(["--watch-postgres", &format!("{prefix}_")]);
        // What each checkout costs, from every replica's metrics (not the
        // PSP simulator's: it stands in for a system outside ours) and
        // Postgres's statistics of the stack's databases.
        for replica in stack.replicas() {
            if replica.service != Service::Psp {
                let url = stack.ops_url(replica);
                command.args(["--metrics", &format!("{}={url}", replica.name())]);
            }
        }
        command.args(["--stats-database-url", &admin_url]);
        if args.baseline {
            command.args(["--baseline-database-url", &admin_url]);
        }
    }
    command.args(&args.rest);
    eprintln!(
        "running shipshape-loadtest {} against {}",
        args.command.name(),
        stack.gateway_url()
    );
    let mut child = command.spawn().context("starting shipshape-loadtest")?;
    // Ctrl-C reaches the load test too (it is in our process group); wait
    // for it to end, then stop the stack in order.
    let status = tokio::select! {
        status = child.wait() => status,
        _ = interrupt.recv() => child.wait().await,
    }
    .context("waiting for shipshape-loadtest")?;

    eprintln!("stopping the stack");
    if let Err(e) = stack.stop().await {
        eprintln!("{e:#}");
    }
    // The services flushed their last spans while stopping.
    if let Some(collector) = collector {
        eprintln!("the services exported {} spans", collector.len());
    }
    Ok(status.code())
}

/// Fails unless `dir` holds a binary of every process a stack runs.
fn check_binaries(dir: &Path) -> anyhow::Result<()> {
    let missing: Vec<&str> = Service::ALL
        .into_iter()
        .map(Service::binary)
        .filter(|binary| !dir.join(binary).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "--compare-bin-dir {}: no {} there (build them with `cargo build --release --bins` \
             and the settings to compare, into a target directory of their own)",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

fn read_report(dir: &Path) -> anyhow::Result<Value> {
    let path = dir.join("report.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// What a comparison of `run` reports shows: label and JSON pointer.
const RUN_ROWS: &[(&str, &str)] = &[
    ("checkouts/s (terminal orders)", "/run/throughput"),
    ("error rate", "/run/error_rate"),
    (
        "POST /api/v1/orders p50 ms",
        "/run/endpoints/POST ~1api~1v1~1orders/latency/p50_ms",
    ),
    (
        "POST /api/v1/orders p99 ms",
        "/run/endpoints/POST ~1api~1v1~1orders/latency/p99_ms",
    ),
    ("saga p50 ms", "/run/saga/p50_ms"),
    ("saga p99 ms", "/run/saga/p99_ms"),
    ("orders placed", "/run/placed"),
    (
        "CPU s per 1,000 checkouts",
        "/cost/system_cpu_seconds_per_1000",
    ),
    ("  the broker's", "/cost/cpu_seconds_per_1000/broker"),
    (
        "transactions per checkout",
        "/cost/transactions_per_checkout_total",
    ),
];

/// What a comparison of `capacity` reports shows.
const CAPACITY_ROWS: &[(&str, &str)] = &[
    ("sustainable checkouts/s", "/capacity/sustainable_rate"),
    ("first broken checkouts/s", "/capacity/first_broken_rate"),
    ("baseline transactions/s", "/baseline/tps"),
    ("saga / baseline", "/baseline/ratio"),
];

/// The rows that compare reports of `command`.
fn rows_for(command: LoadCommand) -> &'static [(&'static str, &'static str)] {
    if command == LoadCommand::Capacity {
        CAPACITY_ROWS
    } else {
        RUN_ROWS
    }
}

/// A value of a comparison table: a number with at most six decimal
/// places, so a long fraction does not run into the next column.
fn cell(value: &Value) -> String {
    match value.as_f64() {
        Some(number) if value.is_f64() => {
            let text = format!("{number:.6}");
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        _ => value.to_string(),
    }
}

/// The reports side by side, one column each, a row per `rows` entry.
fn compare(reports: &[(&str, Value)], rows: &[(&str, &str)]) -> String {
    let mut table = format!("{:<32}", "");
    for (name, _) in reports {
        table.push_str(&format!("{name:>14}"));
    }
    table.push('\n');
    for &(label, pointer) in rows {
        table.push_str(&format!("{label:<32}"));
        for (_, report) in reports {
            let value = report.pointer(pointer).map_or_else(|| "-".to_owned(), cell);
            table.push_str(&format!(" {value:>13}"));
        }
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    /// `cargo xtask loadtest LINE`, checked.
    fn parse(line: &str) -> anyhow::Result<Args> {
        match crate::parse(&format!("loadtest {line}"))? {
            crate::Command::Loadtest(args) => {
                args.check()?;
                Ok(args)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn xtask_flags_come_first_and_the_rest_is_passed_on() {
        assert_eq!(
            parse("--baseline --out /tmp/x capacity --step 20 --half-rate-secs 60").expect("args"),
            Args {
                baseline: true,
                tracing: Tracing::Off,
                security: Security::On,
                broker_tls: false,
                compare_env: Vec::new(),
                compare_bin_dir: None,
                replicas: vec![1],
                out: Some(PathBuf::from("/tmp/x")),
                command: LoadCommand::Capacity,
                rest: args("--step 20 --half-rate-secs 60"),
            }
        );
        // As README.md and docs/ show it.
        let run = parse("run --rate 20 --ramp-secs 10 --duration-secs 120").expect("args");
        assert_eq!(run.command, LoadCommand::Run);
        assert_eq!(
            run.rest,
            args("--rate 20 --ramp-secs 10 --duration-secs 120")
        );
        let capacity = parse("--baseline capacity --half-rate-secs 60").expect("args");
        assert!(capacity.baseline);
        assert_eq!(capacity.rest, args("--half-rate-secs 60"));
        // Right after the command, xtask's flags are still its own.
        let run = parse("run --out=/tmp/x --baseline --rate 5").expect("args");
        assert_eq!(run.out, Some(PathBuf::from("/tmp/x")));
        assert!(run.baseline);
        assert_eq!(run.rest, args("--rate 5"));
        // After the load test's first argument, --help is the load test's.
        assert_eq!(
            parse("run --rate 5 --help").expect("args").rest,
            args("--rate 5 --help")
        );

        let defaults = parse("").expect("args");
        assert_eq!(defaults.command, LoadCommand::Run);
        assert!(!defaults.baseline);
        assert!(defaults.rest.is_empty());
        assert!(parse("explode").is_err());
        assert!(parse("--out").is_err());
        // xtask's own flags after the load test's would reach the load test.
        for line in [
            "--baseline capacity --step 20 --out /tmp/x --half-rate-secs 60",
            "run --rate 5 --out=/tmp/x",
            "capacity --step 20 --baseline",
            "run --rate 5 --tracing on",
            "run --rate 5 --replicas 2",
        ] {
            let error = parse(line).expect_err(line).to_string();
            assert!(error.contains("put it before"), "{line}: {error}");
        }
        assert_eq!(
            parse("--tracing compare run --rate 10")
                .expect("args")
                .tracing,
            Tracing::Compare
        );
        assert!(parse("--tracing sometimes").is_err());
        assert!(parse("--tracing compare capacity").is_err());
        assert!(parse("--tracing compare --baseline run").is_err());
        assert!(parse("--tracing compare --replicas 1,2 run").is_err());
    }

    #[test]
    fn the_security_comparison_runs_one_load_twice_and_nothing_else() {
        for line in [
            "--security compare run --rate 10",
            "--security compare capacity",
        ] {
            assert_eq!(parse(line).expect(line).security, Security::Compare);
        }
        assert_eq!(parse("run").expect("args").security, Security::On);
        assert_eq!(
            parse("--security off run").expect("args").security,
            Security::Off
        );
        for line in [
            "--security compare sequential",
            "--security compare --baseline run",
            "--security compare --replicas 1,2 run",
            "--security compare --tracing compare run",
            "run --rate 5 --security off",
            "--security off --broker-tls run",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        assert!(
            parse("--security compare --broker-tls run")
                .expect("TLS on the secured side")
                .broker_tls
        );
    }

    #[test]
    fn an_environment_comparison_runs_one_load_twice_and_nothing_else() {
        let args = parse("--compare-env KAFKA_FETCH_WAIT_MS=500 --compare-env LOG=a=b run")
            .expect("two settings");
        assert_eq!(
            args.compare_env,
            vec![
                ("KAFKA_FETCH_WAIT_MS".to_owned(), "500".to_owned()),
                ("LOG".to_owned(), "a=b".to_owned()),
            ]
        );
        assert!(parse("--compare-env KAFKA_FETCH_WAIT_MS=500 capacity").is_ok());
        for line in [
            "--compare-env KAFKA_FETCH_WAIT_MS run",
            "--compare-env kafka_fetch=1 run",
            "--compare-env =1 run",
            "--compare-env A=1 sequential",
            "--compare-env A=1 --baseline run",
            "--compare-env A=1 --replicas 1,2 run",
            "--compare-env A=1 --security compare run",
            "--compare-env A=1 --tracing compare run",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn a_build_comparison_runs_one_load_twice_and_nothing_else() {
        let compared = parse("--compare-bin-dir /tmp/lto/release run --rate 100").expect("args");
        assert_eq!(
            compared.compare_bin_dir,
            Some(PathBuf::from("/tmp/lto/release"))
        );
        assert_eq!(compared.rest, args("--rate 100"));
        assert!(parse("--compare-bin-dir /tmp/b capacity").is_ok());
        for line in [
            "--compare-bin-dir /tmp/b sequential",
            "--compare-bin-dir /tmp/b --baseline run",
            "--compare-bin-dir /tmp/b --replicas 1,2 run",
            "--compare-bin-dir /tmp/b --compare-env A=1 run",
            "--compare-bin-dir /tmp/b --security compare run",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        let missing = check_binaries(Path::new("/nonexistent"))
            .expect_err("no binaries there")
            .to_string();
        assert!(missing.contains("shipshape-gateway"), "{missing}");
    }

    #[test]
    fn comparison_cells_stay_in_their_column() {
        assert_eq!(cell(&serde_json::json!(0.00034782608695652176)), "0.000348");
        assert_eq!(cell(&serde_json::json!(47.883)), "47.883");
        assert_eq!(cell(&serde_json::json!(0.0)), "0");
        assert_eq!(cell(&serde_json::json!(2875)), "2875");
    }

    #[test]
    fn replica_counts_are_a_list_of_small_distinct_numbers() {
        let compared = parse("--replicas 1,2 --baseline capacity --start 10 --step 10 --max 200")
            .expect("args");
        assert_eq!(compared.replicas, [1, 2]);
        assert_eq!(parse("").expect("args").replicas, [1]);
        for bad in ["0", "9", "1,1", "1,,2", "two"] {
            assert!(parse_replicas(bad).is_err(), "{bad}");
            assert!(parse(&format!("--replicas {bad}")).is_err(), "{bad}");
        }
        assert!(parse("--replicas 1,2 sequential").is_err());
        assert!(parse("--replicas 2 sequential").is_ok());
    }
}
