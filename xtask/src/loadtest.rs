//! `cargo xtask loadtest`: the load test against a stack of its own.
//!
//! 1. builds the release binaries (the load generator among them: numbers
//!    from debug builds would measure the compiler's settings);
//! 2. starts the whole stack on free ports with fresh databases
//!    (`shipshape_lt<8 hex>_*`, dropped afterwards), the PSP simulator and
//!    the broker, with the gateway's `ADMIN_TOKEN` set to a random value so
//!    the load test can restock, and its per-client rate limit far above
//!    the test's rate (the generator is a single client address);
//! 3. runs `shipshape-loadtest <command>` against the gateway, watching the
//!    memory and CPU of every process of the stack and of the stack's
//!    Postgres backends; with `--baseline` the pgbench baseline runs on the
//!    same Postgres afterwards, in the same report;
//! 4. stops the stack (gateway first, broker last).
//!
//! The report goes to `--out DIR` (default
//! `<target>/loadtest/<UTC timestamp>/`), the stack's logs to `DIR/logs/`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use shipshape_testkit::stack::{Ports, Service, Stack, StackOptions};
use shipshape_testkit::{broker, postgres};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use crate::run_tests::exit_code;
use crate::workspace::Workspace;

/// The per-client rate limit of the load test's gateway: never reached.
const UNLIMITED: &str = "1000000";

/// What `cargo xtask loadtest` takes for itself; the rest goes to
/// `shipshape-loadtest`.
#[derive(Debug, PartialEq)]
struct Args {
    baseline: bool,
    out: Option<PathBuf>,
    command: String,
    rest: Vec<String>,
}

fn parse(args: Vec<String>) -> anyhow::Result<Args> {
    let mut baseline = false;
    let mut out = None;
    let mut command = None;
    let mut rest = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--baseline" => baseline = true,
            "--out" => {
                out = Some(PathBuf::from(
                    args.next().context("--out needs a directory")?,
                ))
            }
            _ if arg.starts_with("--out=") => out = Some(PathBuf::from(&arg["--out=".len()..])),
            _ if command.is_none() && !arg.starts_with('-') => command = Some(arg),
            _ => rest.push(arg),
        }
    }
    let command = command.unwrap_or_else(|| "run".to_owned());
    if !["run", "capacity", "sequential", "baseline"].contains(&command.as_str()) {
        bail!("`cargo xtask loadtest` runs run, capacity, sequential or baseline, not `{command}`");
    }
    Ok(Args {
        baseline,
        out,
        command,
        rest,
    })
}

pub async fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let args = parse(args)?;
    let workspace = Workspace::load().await?;
    workspace.build_binaries(true, false).await?;
    let bin_dir = workspace.bin_dir(true);
    let loadtest = bin_dir.join("shipshape-loadtest");
    let out = match args.out.clone() {
        Some(out) => out,
        None => workspace
            .target_dir
            .join("loadtest")
            .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let admin_url = postgres::ensure_server().await?;

    if args.command == "baseline" {
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

    broker::install()?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let token = random_hex(16)?;
    let prefix = format!("shipshape_lt{}", random_hex(4)?);
    let mut options = StackOptions::local(&bin_dir, out.join("logs"));
    options.ports = Ports::Free;
    options.database_prefix = prefix.clone();
    options.keep_databases = false;
    // Every request of the load test comes from one address, which the
    // gateway's per-client rate limit (100/s by default) counts as one
    // client: it would measure the limit, not the checkout. The limiter
    // stays on, so its cost is measured, but far above the test's rate.
    let options = options
        .with_env(Service::Gateway, "ADMIN_TOKEN", &token)
        .with_env(Service::Gateway, "RATE_LIMIT_PER_SECOND", UNLIMITED)
        .with_env(Service::Gateway, "RATE_LIMIT_BURST", UNLIMITED);
    eprintln!(
        "starting the stack (logs in {})",
        out.join("logs").display()
    );
    let stack = tokio::select! {
        started = Stack::start(options) => started?,
        _ = interrupt.recv() => bail!("interrupted during start-up"),
    };

    let mut command = Command::new(&loadtest);
    command
        .arg(&args.command)
        .args(["--gateway", &stack.gateway_url()])
        .env("SHIPSHAPE_ADMIN_TOKEN", &token);
    if args.command != "sequential" {
        command.arg("--out").arg(&out);
        for service in Service::ALL {
            if let Some(pid) = stack.pid(service) {
                command.args(["--watch", &format!("{}={pid}", service.name())]);
            }
        }
        if let Some(pid) = stack.broker_pid() {
            command.args(["--watch", &format!("broker={pid}")]);
        }
        command.args(["--watch-postgres", &format!("{prefix}_")]);
        if args.baseline {
            command.args(["--baseline-database-url", &admin_url]);
        }
    }
    command.args(&args.rest);
    eprintln!(
        "running shipshape-loadtest {} against {}",
        args.command,
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
    Ok(exit_code(status.code()))
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut buffer))
        .context("reading /dev/urandom")?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn xtask_flags_are_taken_out_and_the_rest_passed_on() {
        assert_eq!(
            parse(args(
                "--baseline capacity --step 20 --out /tmp/x --half-rate-secs 60"
            ))
            .expect("args"),
            Args {
                baseline: true,
                out: Some(PathBuf::from("/tmp/x")),
                command: "capacity".to_owned(),
                rest: args("--step 20 --half-rate-secs 60"),
            }
        );
        let defaults = parse(Vec::new()).expect("args");
        assert_eq!(defaults.command, "run");
        assert!(!defaults.baseline);
        assert!(parse(args("explode")).is_err());
        assert!(parse(args("run --out")).is_err());
    }

    #[test]
    fn random_hex_has_two_digits_per_byte() {
        let a = random_hex(4).expect("random");
        assert_eq!(a.len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(4).expect("random"));
    }
}
