//! The command line: parsed into a [`Command`] without doing anything, so
//! every flag is tested without a gateway.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::baseline::BaselineOptions;
use crate::capacity::{Slo, Steps};
use crate::client::Secret;
use crate::procstat::Watch;
use crate::run::{Load, RunOptions};
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

pub const USAGE: &str = "\
Usage: shipshape-loadtest <command> [options]

Commands:
  run        drive checkouts through the gateway and report
             --rate R [--ramp-secs S] [--duration-secs D]   open model (default 10/s, 60 s)
             --users N [--duration-secs D]                  closed model instead
  capacity   step the arrival rate up until the SLO breaks, report the highest
             sustainable rate
             [--start R (10)] [--step R (10)] [--max R (500)] [--step-secs S (30)]
             [--refine N (2)] [--slo-p99-ms MS (250)] [--max-error-rate F (0.001)]
             [--half-rate-secs D (0)]   then run D s at half the rate found
  baseline   the one-transaction baseline: pgbench runs a checkout's writes in
             one transaction in a scratch database it creates and drops
             --database-url URL [--duration-secs D (30)] [--clients C (8)]
  sequential place orders one at a time [--orders N (200)] [--poll-ms MS (1)]

Options of run and capacity:
  --gateway URL            the gateway (default http://127.0.0.1:8080)
  --token T                a customer's bearer token (or $SHIPSHAPE_TOKEN): the
                           orders are placed and read as that customer
  --admin-token T          a bearer token with the admin scope (or
                           $SHIPSHAPE_ADMIN_TOKEN): restock through the admin
                           API before and during the run
  --mix SPEC               valid=90,declined=5,unsupported_country=3,out_of_stock=2
  --popularity P           uniform (default) or zipf:S, e.g. zipf:1.1
  --poll-ms MS             poll an order every MS until terminal (50)
  --order-timeout-secs S   an order not terminal S after it was placed fails (60)
  --request-timeout-ms MS  a request without an answer after MS fails (10000)
  --max-in-flight N        checkouts in flight before arrivals count as
                           generator_overloaded (10000)
  --stock-target N         units each product is kept near when restocking (20000)
  --quiet                  no progress line
  --out DIR                write report.json, report.txt and report.svg into DIR
  --watch NAME=PID         report the memory and CPU of this process (repeatable)
  --watch-postgres PREFIX  ... and of the Postgres backends of databases PREFIX*
  --baseline-database-url URL   run the baseline afterwards and compare
  --baseline-secs D, --baseline-clients C
";

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
    pub baseline: Option<BaselineOptions>,
}

#[derive(Debug)]
pub struct CapacityCommand {
    pub load: LoadCommand,
    pub steps: Steps,
    pub step_duration: Duration,
    pub slo: Slo,
    /// After the search, a run at half the sustainable rate for this long.
    pub half_rate: Option<Duration>,
}

/// `--flag value` and `--flag=value` pairs, in order.
struct Flags {
    pairs: Vec<(String, Option<String>)>,
}

/// Flags that take no value.
const SWITCHES: [&str; 1] = ["--quiet"];

impl Flags {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut pairs = Vec::new();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if !arg.starts_with("--") {
                bail!("unexpected argument `{arg}`");
            }
            if let Some((flag, value)) = arg.split_once('=') {
                pairs.push((flag.to_owned(), Some(value.to_owned())));
            } else if SWITCHES.contains(&arg.as_str()) {
                pairs.push((arg.clone(), None));
            } else {
                let value = rest
                    .next()
                    .with_context(|| format!("{arg} needs a value"))?;
                pairs.push((arg.clone(), Some(value.clone())));
            }
        }
        Ok(Self { pairs })
    }

    /// Removes and returns every value of `flag`.
    fn all(&mut self, flag: &str) -> Vec<String> {
        let mut values = Vec::new();
        self.pairs.retain(|(name, value)| {
            if name == flag {
                values.extend(value.clone());
                false
            } else {
                true
            }
        });
        values
    }

    /// The (last) value of `flag`, parsed.
    fn value<T>(&mut self, flag: &str) -> anyhow::Result<Option<T>>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.all(flag).pop() {
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{flag} {raw}: {e}")),
            None => Ok(None),
        }
    }

    fn switch(&mut self, flag: &str) -> bool {
        let before = self.pairs.len();
        self.pairs.retain(|(name, _)| name != flag);
        self.pairs.len() != before
    }

    fn secs(&mut self, flag: &str) -> anyhow::Result<Option<Duration>> {
        Ok(self.value::<f64>(flag)?.map(Duration::from_secs_f64))
    }

    fn millis(&mut self, flag: &str) -> anyhow::Result<Option<Duration>> {
        Ok(self.value::<u64>(flag)?.map(Duration::from_millis))
    }

    /// Fails on any flag nobody asked for.
    fn finish(self) -> anyhow::Result<()> {
        match self.pairs.first() {
            Some((flag, _)) => bail!("unknown or misplaced option {flag}"),
            None => Ok(()),
        }
    }
}

/// Parses the arguments after the program name, with the tokens `env`
/// holds.
pub fn parse(args: &[String], env: TokensFromEnv) -> anyhow::Result<Command> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    let mut flags = Flags::parse(rest)?;
    let command = match command.as_str() {
        "run" => Command::Run(load_command(&mut flags, env, true)?),
        "capacity" => {
            let load = load_command(&mut flags, env, false)?;
            let default = Slo::default();
            let steps = Steps {
                start: flags
                    .value::<Rate>("--start")?
                    .map_or(10.0, Rate::per_second),
                step: flags
                    .value::<Rate>("--step")?
                    .map_or(10.0, Rate::per_second),
                max: flags
                    .value::<Rate>("--max")?
                    .map_or(500.0, Rate::per_second),
                refine: flags.value("--refine")?.unwrap_or(2),
            };
            let max_error_rate: f64 = flags
                .value("--max-error-rate")?
                .unwrap_or(default.max_error_rate);
            if !(0.0..=1.0).contains(&max_error_rate) {
                bail!("--max-error-rate is a fraction between 0 and 1, e.g. 0.001");
            }
            Command::Capacity(CapacityCommand {
                load,
                steps,
                step_duration: flags
                    .secs("--step-secs")?
                    .unwrap_or(Duration::from_secs(30)),
                slo: Slo {
                    saga_p99_ms: flags.value("--slo-p99-ms")?.unwrap_or(default.saga_p99_ms),
                    max_error_rate,
                    ..default
                },
                half_rate: flags.secs("--half-rate-secs")?.filter(|d| !d.is_zero()),
            })
        }
        "baseline" => {
            let url: String = flags
                .value("--database-url")?
                .context("baseline needs --database-url (a role that may create databases)")?;
            let mut options = BaselineOptions::new(url);
            if let Some(duration) = flags.secs("--duration-secs")? {
                options.duration = duration;
            }
            if let Some(clients) = flags.value("--clients")? {
                options.clients = clients;
            }
            Command::Baseline(options, flags.value("--out")?)
        }
        "sequential" => Command::Sequential(sequential::Options {
            gateway: flags
                .value("--gateway")?
                .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
            token: flags
                .value::<String>("--token")?
                .or(env.token)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            orders: flags.value("--orders")?.unwrap_or(200),
            poll_interval: flags
                .millis("--poll-ms")?
                .unwrap_or(Duration::from_millis(1)),
            order_timeout: Duration::from_secs(60),
        }),
        "help" => Command::Help,
        other => bail!("unknown command `{other}`"),
    };
    flags.finish()?;
    Ok(command)
}

fn load_command(
    flags: &mut Flags,
    env: TokensFromEnv,
    with_load: bool,
) -> anyhow::Result<LoadCommand> {
    let gateway = flags
        .value("--gateway")?
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let mut ramp = Duration::ZERO;
    let load = if with_load {
        let duration = flags
            .secs("--duration-secs")?
            .unwrap_or(Duration::from_secs(60));
        let rate: Option<Rate> = flags.value("--rate")?;
        let users: Option<u32> = flags.value("--users")?;
        ramp = flags.secs("--ramp-secs")?.unwrap_or(Duration::ZERO);
        match (rate, users) {
            (Some(_), Some(_)) => {
                bail!("--rate (open model) and --users (closed model) exclude each other")
            }
            (None, Some(0)) => bail!("--users must be at least 1"),
            (None, Some(users)) => Load::Closed { users, duration },
            (rate, None) => {
                let rate = match rate {
                    Some(rate) => rate,
                    None => Rate::new(10.0)?,
                };
                Load::Open(Schedule::ramped(rate, ramp, duration))
            }
        }
    } else {
        // The capacity search builds each step's load itself.
        Load::Open(Schedule::constant(Rate::new(1.0)?, Duration::from_secs(1)))
    };
    let mut options = RunOptions::new(gateway, load);
    options.ramp = ramp;
    if let Some(mix) = flags.value("--mix")? {
        options.mix = mix;
    }
    if let Some(popularity) = flags.value("--popularity")? {
        options.popularity = popularity;
    }
    if let Some(poll) = flags.millis("--poll-ms")? {
        options.poll_interval = poll;
    }
    if let Some(timeout) = flags.secs("--order-timeout-secs")? {
        options.order_timeout = timeout;
    }
    if let Some(timeout) = flags.millis("--request-timeout-ms")? {
        options.request_timeout = timeout;
    }
    if let Some(max) = flags.value::<usize>("--max-in-flight")? {
        anyhow::ensure!(max > 0, "--max-in-flight must be at least 1");
        options.max_in_flight = max;
    }
    if let Some(target) = flags.value::<i64>("--stock-target")? {
        anyhow::ensure!(
            (1..=1_000_000).contains(&target),
            "--stock-target must be 1 to 1000000"
        );
        options.stock_target = target;
    }
    options.admin_token = flags
        .value::<String>("--admin-token")?
        .or(env.admin_token)
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    options.token = flags
        .value::<String>("--token")?
        .or(env.token)
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    options.progress = !flags.switch("--quiet");

    let mut watch = Watch {
        this_process: true,
        ..Watch::default()
    };
    for spec in flags.all("--watch") {
        let (name, pid) = spec
            .split_once('=')
            .with_context(|| format!("--watch {spec}: expected NAME=PID"))?;
        let pid = pid
            .parse()
            .with_context(|| format!("--watch {spec}: `{pid}` is not a pid"))?;
        watch.pids.push((name.to_owned(), pid));
    }
    watch.postgres_prefix = flags.value("--watch-postgres")?;

    let baseline = match flags.value::<String>("--baseline-database-url")? {
        Some(url) => {
            let mut baseline = BaselineOptions::new(url);
            if let Some(duration) = flags.secs("--baseline-secs")? {
                baseline.duration = duration;
            }
            if let Some(clients) = flags.value("--baseline-clients")? {
                baseline.clients = clients;
            }
            Some(baseline)
        }
        None => None,
    };
    Ok(LoadCommand {
        options,
        out: flags.value("--out")?,
        watch,
        baseline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Mix, Popularity};

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn run_takes_an_open_model_with_a_ramp() {
        let Command::Run(run) = parse(
            &args(
                "run --gateway http://gw:8080 --rate 50 --ramp-secs 10 --duration-secs 120 \
                 --mix valid=1 --popularity zipf:1.1 --watch gateway=42 --watch order=43 \
                 --out /tmp/r --quiet",
            ),
            TokensFromEnv::default(),
        )
        .expect("parsed") else {
            panic!("not run");
        };
        let o = &run.options;
        assert_eq!(o.gateway, "http://gw:8080");
        let Load::Open(schedule) = &o.load else {
            panic!("not open");
        };
        assert_eq!(schedule.duration(), Duration::from_secs(120));
        assert_eq!(schedule.peak(), 50.0);
        assert_eq!(schedule.expected_arrivals(), 50.0 * 115.0);
        assert_eq!(o.ramp, Duration::from_secs(10));
        assert_eq!(o.mix, "valid=1".parse::<Mix>().expect("mix"));
        assert_eq!(o.popularity, Popularity::Zipf(1.1));
        assert!(!o.progress);
        assert_eq!(
            run.watch.pids,
            [("gateway".to_owned(), 42), ("order".to_owned(), 43)]
        );
        assert_eq!(run.out, Some(PathBuf::from("/tmp/r")));
        assert!(run.baseline.is_none());
    }

    #[test]
    fn users_make_a_closed_model_and_exclude_a_rate() {
        let Command::Run(run) = parse(
            &args("run --users 8 --duration-secs 5"),
            TokensFromEnv::default(),
        )
        .expect("parsed") else {
            panic!("not run");
        };
        assert!(matches!(
            run.options.load,
            Load::Closed { users: 8, duration } if duration == Duration::from_secs(5)
        ));
        assert!(parse(&args("run --users 8 --rate 3"), TokensFromEnv::default()).is_err());
        assert!(parse(&args("run --users 0"), TokensFromEnv::default()).is_err());
    }

    #[test]
    fn the_admin_token_comes_from_the_flag_or_the_environment() {
        let token = |line: &str, env: Option<&str>| {
            let env = TokensFromEnv {
                admin_token: env.map(str::to_owned),
                token: None,
            };
            match parse(&args(line), env) {
                Ok(Command::Run(run)) => run.options.admin_token.map(|t| t.expose().to_owned()),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(token("run", None), None);
        assert_eq!(token("run", Some("from-env")).as_deref(), Some("from-env"));
        assert_eq!(
            token("run --admin-token=flag", Some("from-env")).as_deref(),
            Some("flag")
        );
        assert_eq!(token("run", Some("")), None);
    }

    #[test]
    fn capacity_has_the_documented_defaults() {
        let Command::Capacity(capacity) =
            parse(&args("capacity"), TokensFromEnv::default()).expect("parsed")
        else {
            panic!("not capacity");
        };
        assert_eq!(
            capacity.steps,
            Steps {
                start: 10.0,
                step: 10.0,
                max: 500.0,
                refine: 2
            }
        );
        assert_eq!(capacity.slo, Slo::default());
        assert_eq!(capacity.step_duration, Duration::from_secs(30));
        assert_eq!(capacity.half_rate, None);

        let Command::Capacity(capacity) = parse(
            &args(
                "capacity --start 20 --step 5 --max 80 --step-secs 15 --slo-p99-ms 100 \
                 --max-error-rate 0.01 --half-rate-secs 60 --baseline-database-url \
                 postgres://postgres@127.0.0.1/postgres --baseline-secs 20",
            ),
            TokensFromEnv::default(),
        )
        .expect("parsed") else {
            panic!("not capacity");
        };
        assert_eq!(capacity.steps.start, 20.0);
        assert_eq!(capacity.slo.saga_p99_ms, 100.0);
        assert_eq!(capacity.slo.max_error_rate, 0.01);
        assert_eq!(capacity.half_rate, Some(Duration::from_secs(60)));
        let baseline = capacity.load.baseline.expect("baseline");
        assert_eq!(baseline.duration, Duration::from_secs(20));
        assert!(
            parse(
                &args("capacity --max-error-rate 2"),
                TokensFromEnv::default()
            )
            .is_err()
        );
    }

    #[test]
    fn mistakes_are_reported() {
        for line in [
            "run --rate",
            "run --rate fast",
            "run --colour blue",
            "run stray",
            "run --watch gateway",
            "capacity --rate 5",
            "capacity --duration-secs 5",
            "baseline",
            "fly",
        ] {
            assert!(
                parse(&args(line), TokensFromEnv::default()).is_err(),
                "{line}"
            );
        }
        assert!(matches!(
            parse(&[], TokensFromEnv::default()),
            Ok(Command::Help)
        ));
        assert!(matches!(
            parse(&args("run --help"), TokensFromEnv::default()),
            Ok(Command::Help)
        ));
    }

    #[test]
    fn baseline_and_sequential_parse() {
        let Command::Baseline(options, out) = parse(
            &args("baseline --database-url postgres://p@h/db --duration-secs 5 --clients 4"),
            TokensFromEnv::default(),
        )
        .expect("parsed") else {
            panic!("not baseline");
        };
        assert_eq!(options.clients, 4);
        assert_eq!(options.duration, Duration::from_secs(5));
        assert_eq!(out, None);
        let Command::Sequential(options) = parse(
            &args("sequential --orders 3 --poll-ms 2"),
            TokensFromEnv::default(),
        )
        .expect("parsed") else {
            panic!("not sequential");
        };
        assert_eq!(options.orders, 3);
        assert_eq!(options.poll_interval, Duration::from_millis(2));
    }
}
