//! The command line: parsed by clap into a [`Cli`], then turned into a
//! [`Command`] without doing anything, so every flag is tested without a
//! gateway.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand};

use crate::baseline::BaselineOptions;
use crate::capacity::{Slo, Steps};
use crate::client::Secret;
use crate::cost::CostSources;
use crate::procstat::Watch;
use crate::run::{Load, RunOptions};
use crate::scenario::{Mix, Popularity};
use crate::schedule::{Rate, Schedule};
use crate::sequential;

/// The environment variables the bearer tokens may come from (instead of
/// `--admin-token` and `--token`, which other users of the machine can see
/// in `ps`).
pub const ADMIN_TOKEN_VAR: &str = "SHIPSHAPE_ADMIN_TOKEN";
pub const TOKEN_VAR: &str = "SHIPSHAPE_TOKEN";

/// Bearer tokens found in the environment ([`ADMIN_TOKEN_VAR`],
/// [`TOKEN_VAR`]); the flags win over them.
#[derive(Clone, Debug, Default)]
pub struct TokensFromEnv {
    pub admin_token: Option<String>,
    pub token: Option<String>,
}

impl TokensFromEnv {
    pub fn read() -> Self {
        Self {
            admin_token: std::env::var(ADMIN_TOKEN_VAR).ok(),
            token: std::env::var(TOKEN_VAR).ok(),
        }
    }
}

const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";

/// Drives the checkout through the public gateway API at a fixed arrival
/// rate and reports latencies, outcomes, capacity and a one-transaction
/// baseline.
#[derive(Debug, Parser)]
// A repeated option takes its last value, as the command line always has.
#[command(name = "shipshape-loadtest", args_override_self = true)]
pub struct Cli {
    // Without a command, the help, on stdout.
    #[command(subcommand)]
    command: Option<CommandArgs>,
}

#[derive(Debug, Subcommand)]
enum CommandArgs {
    /// Drive checkouts through the gateway and report
    Run(RunArgs),
    /// Step the arrival rate up until the SLO breaks and report the highest
    /// sustainable rate
    Capacity(CapacityArgs),
    /// The one-transaction baseline: pgbench runs a checkout's writes in one
    /// transaction in a scratch database it creates and drops
    Baseline(BaselineArgs),
    /// Place orders one at a time
    Sequential(SequentialArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Checkouts per second (the open model)
    #[arg(long, value_name = "R", default_value = "10")]
    rate: Rate,
    /// Shoppers, each starting a checkout when its last one ended (the
    /// closed model, instead of --rate)
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "rate",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    users: Option<u32>,
    /// Seconds over which the rate rises linearly from 0
    #[arg(long, value_name = "S", default_value = "0", value_parser = seconds)]
    ramp_secs: Duration,
    /// Seconds the load lasts
    #[arg(long, value_name = "D", default_value = "60", value_parser = seconds)]
    duration_secs: Duration,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Args)]
struct CapacityArgs {
    /// The first step's rate, checkouts per second
    #[arg(long, value_name = "R", default_value = "10")]
    start: Rate,
    /// What each step adds to the rate
    #[arg(long, value_name = "R", default_value = "10")]
    step: Rate,
    /// The highest rate tried
    #[arg(long, value_name = "R", default_value = "500")]
    max: Rate,
    /// Seconds each step runs
    #[arg(long, value_name = "S", default_value = "30", value_parser = seconds)]
    step_secs: Duration,
    /// Seconds at the first step's rate before the search, not judged: a
    /// stack just started takes its first seconds to warm up (0: none)
    #[arg(long, value_name = "S", default_value = "15", value_parser = seconds)]
    warmup_secs: Duration,
    /// Bisections between the last rate that held and the first that broke
    #[arg(long, value_name = "N", default_value_t = 2)]
    refine: u32,
    /// The SLO's bound on the p99 of placed to terminal, milliseconds
    #[arg(long, value_name = "MS", default_value_t = Slo::default().saga_p99_ms)]
    slo_p99_ms: f64,
    /// The SLO's bound on failed checkouts per arrival, a fraction between 0
    /// and 1
    #[arg(
        long,
        value_name = "F",
        default_value_t = Slo::default().max_error_rate,
        value_parser = fraction
    )]
    max_error_rate: f64,
    /// After the search, run this many seconds at half the rate found (0:
    /// no such run)
    #[arg(long, value_name = "D", default_value = "0", value_parser = seconds)]
    half_rate_secs: Duration,
    #[command(flatten)]
    load: LoadArgs,
}

/// The options `run` and `capacity` share.
#[derive(Debug, Args)]
struct LoadArgs {
    /// The gateway's base URL
    #[arg(long, value_name = "URL", default_value = DEFAULT_GATEWAY)]
    gateway: String,
    /// A customer's bearer token: the orders are placed and read as that
    /// customer [default: $SHIPSHAPE_TOKEN]
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// A bearer token with the admin scope: restock through the admin API
    /// before and during the run [default: $SHIPSHAPE_ADMIN_TOKEN]
    #[arg(long, value_name = "T")]
    admin_token: Option<String>,
    /// How often each saga path is taken, NAME=WEIGHT,...
    #[arg(long, value_name = "SPEC", default_value_t = Mix::default())]
    mix: Mix,
    /// How often each product is bought: uniform, or zipf:S (e.g. zipf:1.1)
    #[arg(long, value_name = "P", default_value_t = Popularity::Uniform)]
    popularity: Popularity,
    /// Poll an order every MS milliseconds until it is terminal
    #[arg(long, value_name = "MS", default_value = "50", value_parser = millis)]
    poll_ms: Duration,
    /// An order not terminal S seconds after it was placed fails
    #[arg(long, value_name = "S", default_value = "60", value_parser = seconds)]
    order_timeout_secs: Duration,
    /// A request without an answer after MS milliseconds fails
    #[arg(long, value_name = "MS", default_value = "10000", value_parser = millis)]
    request_timeout_ms: Duration,
    /// Checkouts in flight before arrivals count as generator_overloaded
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..)
    )]
    max_in_flight: usize,
    /// Units each product is kept near when restocking
    #[arg(
        long,
        value_name = "N",
        default_value_t = 20_000,
        value_parser = clap::value_parser!(i64).range(1..=1_000_000)
    )]
    stock_target: i64,
    /// No progress line
    #[arg(long)]
    quiet: bool,
    /// Write report.json, report.txt and report.svg into DIR
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Report the memory and CPU of this process too (repeatable)
    #[arg(long, value_name = "NAME=PID", value_parser = watched_process)]
    watch: Vec<(String, u32)>,
    /// Report the memory and CPU of the Postgres backends of the databases
    /// named PREFIX..., and of the server's own processes
    #[arg(long, value_name = "PREFIX")]
    watch_postgres: Option<String>,
    /// Count what each checkout costs from this service's metrics (its ops
    /// server's base URL; repeatable)
    #[arg(long, value_name = "NAME=URL", value_parser = metrics_source)]
    metrics: Vec<(String, String)>,
    /// Count each checkout's commits and rows written in the databases
    /// named by --watch-postgres, from this Postgres's pg_stat_database
    #[arg(long, value_name = "URL", requires = "watch_postgres")]
    stats_database_url: Option<String>,
    /// Run the baseline afterwards on this Postgres (a role that may create
    /// databases) and compare
    #[arg(long, value_name = "URL")]
    baseline_database_url: Option<String>,
    /// Seconds the baseline runs
    #[arg(
        long,
        value_name = "D",
        default_value = "30",
        value_parser = seconds,
        requires = "baseline_database_url"
    )]
    baseline_secs: Duration,
    /// The baseline's concurrent connections (pgbench -c)
    #[arg(
        long,
        value_name = "C",
        default_value_t = 8,
        requires = "baseline_database_url"
    )]
    baseline_clients: u32,
}

#[derive(Debug, Args)]
struct BaselineArgs {
    /// A Postgres URL of a role that may create databases; the scratch
    /// database is created on the same server
    #[arg(long, value_name = "URL")]
    database_url: String,
    /// Seconds pgbench runs
    #[arg(long, value_name = "D", default_value = "30", value_parser = seconds)]
    duration_secs: Duration,
    /// Concurrent connections (pgbench -c)
    #[arg(long, value_name = "C", default_value_t = 8)]
    clients: u32,
    /// Write baseline.json into DIR
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SequentialArgs {
    /// The gateway's base URL
    #[arg(long, value_name = "URL", default_value = DEFAULT_GATEWAY)]
    gateway: String,
    /// A customer's bearer token: the orders are placed as that customer
    /// [default: $SHIPSHAPE_TOKEN]
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Orders to place
    #[arg(long, value_name = "N", default_value_t = 200)]
    orders: usize,
    /// Poll an order every MS milliseconds until it is terminal
    #[arg(long, value_name = "MS", default_value = "1", value_parser = millis)]
    poll_ms: Duration,
}

/// Seconds, with a fraction if need be (`0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    text.parse()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("`{text}` is not a number of seconds"))
}

fn millis(text: &str) -> Result<Duration, String> {
    text.parse()
        .map(Duration::from_millis)
        .map_err(|_| format!("`{text}` is not a whole number of milliseconds"))
}

fn fraction(text: &str) -> Result<f64, String> {
    text.parse()
        .ok()
        .filter(|value| (0.0..=1.0).contains(value))
        .ok_or_else(|| format!("`{text}` is not a fraction between 0 and 1, e.g. 0.001"))
}

/// `gateway=4242`: a process to watch, by the name the report gives it.
fn watched_process(spec: &str) -> Result<(String, u32), String> {
    let (name, pid) = spec.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|_| format!("`{pid}` is not a pid"))?;
    Ok((name.to_owned(), pid))
}

/// `order=http://127.0.0.1:9101`: a service's ops server, by the name the
/// report gives it.
fn metrics_source(spec: &str) -> Result<(String, String), String> {
    let (name, url) = spec.split_once('=').ok_or("expected NAME=URL")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("`{url}` is not an http:// or https:// URL"));
    }
    Ok((name.to_owned(), url.to_owned()))
}

/// What to do.
#[derive(Debug)]
pub enum Command {
    Run(LoadCommand),
    Capacity(CapacityCommand),
    Baseline(BaselineOptions, Option<PathBuf>),
    Sequential(sequential::Options),
    Help,
}

/// Settings shared by `run` and `capacity`.
#[derive(Debug)]
pub struct LoadCommand {
    pub options: RunOptions,
    pub out: Option<PathBuf>,
    pub watch: Watch,
    /// Where the cost per checkout is counted from.
    pub cost: CostSources,
    pub baseline: Option<BaselineOptions>,
}

#[derive(Debug)]
pub struct CapacityCommand {
    pub load: LoadCommand,
    pub steps: Steps,
    pub step_duration: Duration,
    /// Before the search, a run at the first step's rate, not judged.
    pub warmup: Duration,
    pub slo: Slo,
    /// After the search, a run at half the sustainable rate for this long.
    pub half_rate: Option<Duration>,
}

impl Cli {
    /// What the command line asks for, with the bearer tokens `env` holds
    /// where no flag gives one.
    pub fn into_command(self, env: TokensFromEnv) -> anyhow::Result<Command> {
        let Some(command) = self.command else {
            return Ok(Command::Help);
        };
        Ok(match command {
            CommandArgs::Run(run) => {
                let load = match run.users {
                    Some(users) => Load::Closed {
                        users,
                        duration: run.duration_secs,
                    },
                    None => {
                        Load::Open(Schedule::ramped(run.rate, run.ramp_secs, run.duration_secs))
                    }
                };
                Command::Run(run.load.into_command(load, run.ramp_secs, env))
            }
            CommandArgs::Capacity(capacity) => {
                // The capacity search builds each step's load itself.
                let load = Load::Open(Schedule::constant(Rate::new(1.0)?, Duration::from_secs(1)));
                Command::Capacity(CapacityCommand {
                    load: capacity.load.into_command(load, Duration::ZERO, env),
                    steps: Steps {
                        start: capacity.start.per_second(),
                        step: capacity.step.per_second(),
                        max: capacity.max.per_second(),
                        refine: capacity.refine,
                    },
                    step_duration: capacity.step_secs,
                    warmup: capacity.warmup_secs,
                    slo: Slo {
                        saga_p99_ms: capacity.slo_p99_ms,
                        max_error_rate: capacity.max_error_rate,
                        ..Slo::default()
                    },
                    half_rate: Some(capacity.half_rate_secs).filter(|d| !d.is_zero()),
                })
            }
            CommandArgs::Baseline(baseline) => {
                let mut options = BaselineOptions::new(baseline.database_url);
                options.duration = baseline.duration_secs;
                options.clients = baseline.clients;
                Command::Baseline(options, baseline.out)
            }
            CommandArgs::Sequential(args) => Command::Sequential(sequential::Options {
                gateway: args.gateway,
                token: bearer(args.token, env.token),
                orders: args.orders,
                poll_interval: args.poll_ms,
                order_timeout: Duration::from_secs(60),
            }),
        })
    }
}

impl LoadArgs {
    fn into_command(self, load: Load, ramp: Duration, env: TokensFromEnv) -> LoadCommand {
        let mut options = RunOptions::new(self.gateway, load);
        options.ramp = ramp;
        options.mix = self.mix;
        options.popularity = self.popularity;
        options.poll_interval = self.poll_ms;
        options.order_timeout = self.order_timeout_secs;
        options.request_timeout = self.request_timeout_ms;
        options.max_in_flight = self.max_in_flight;
        options.stock_target = self.stock_target;
        options.admin_token = bearer(self.admin_token, env.admin_token);
        options.token = bearer(self.token, env.token);
        options.progress = !self.quiet;
        let baseline = self.baseline_database_url.map(|url| {
            let mut baseline = BaselineOptions::new(url);
            baseline.duration = self.baseline_secs;
            baseline.clients = self.baseline_clients;
            baseline
        });
        let cost = CostSources {
            metrics: self.metrics,
            postgres: self.stats_database_url.zip(self.watch_postgres.clone()),
        };
        LoadCommand {
            options,
            out: self.out,
            watch: Watch {
                pids: self.watch,
                postgres_prefix: self.watch_postgres,
                this_process: true,
            },
            cost,
            baseline,
        }
    }
}

/// The flag's token, else the environment's; an empty one is none.
fn bearer(flag: Option<String>, env: Option<String>) -> Option<Secret> {
    flag.or(env).filter(|t| !t.is_empty()).map(Secret::new)
}

#[cfg(test)]
mod tests;
