//! `cargo xtask schemathesis`: the gateway against its own OpenAPI document.
//!
//! 1. builds the service binaries (debug);
//! 2. starts the whole stack on free ports with fresh databases
//!    (`shipshape_st<8 hex>_*`, dropped afterwards), a random token secret,
//!    and the gateway's per-client rate limit far above what the run sends
//!    (schemathesis is one client, and a `429` would only measure the limit);
//! 3. runs `schemathesis run <gateway>/openapi.json` twice:
//!    - with an admin token over every operation: an admin token names a
//!      customer too (the scope is an addition), so one run covers the
//!      catalog, the caller's orders and restocking;
//!    - with a plain customer's token over the admin operations only, so
//!      the `403` answer is checked against the document as well;
//!
//!    each with the checks `not_a_server_error`, `status_code_conformance`,
//!    `content_type_conformance`, `response_headers_conformance` and
//!    `response_schema_conformance`, a bounded number of examples per
//!    operation, a fixed seed and one worker, so a run is reproducible;
//! 4. prints how many test cases ran, stops the stack (gateway first,
//!    broker last) and fails if either run did.
//!
//! The schemathesis binary is `--schemathesis PATH`, else
//! `$SHIPSHAPE_SCHEMATHESIS`, else `schemathesis` on `PATH`
//! (`ci/schemathesis.sh` installs a pinned one and passes it). Logs and
//! reports go to `--out DIR` (default `<target>/schemathesis/<timestamp>`);
//! schemathesis runs in that directory, so it writes nothing into the clone.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shipshape_testkit::stack::{Stack, StackOptions};
use shipshape_testkit::{auth, broker, postgres};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use crate::workspace::Workspace;

/// How long the run's tokens are valid: far longer than a run.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What every response is checked for.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Test cases per operation (and per phase), unless `--max-examples`.
const MAX_EXAMPLES: u32 = 50;
/// Test cases per admin operation in the customer's run: it only needs to
/// meet the `403`.
const CUSTOMER_MAX_EXAMPLES: u32 = 5;

/// The seed of the data generation, unless `--seed`: a run is reproducible.
const SEED: u64 = 20_250_131;

/// The variable naming the schemathesis binary when `--schemathesis` does
/// not (ci/schemathesis.sh sets it).
const BINARY_VAR: &str = "SHIPSHAPE_SCHEMATHESIS";

/// How schemathesis runs.
#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// The schemathesis binary [default: $SHIPSHAPE_SCHEMATHESIS, else
    /// schemathesis on the PATH]
    #[arg(long, value_name = "PATH")]
    schemathesis: Option<PathBuf>,
    /// Test cases per operation and phase (the customer's run over the admin
    /// operations makes at most 5)
    #[arg(
        long,
        value_name = "N",
        default_value_t = MAX_EXAMPLES,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_examples: u32,
    /// The seed of the data generation
    #[arg(long, value_name = "N", default_value_t = SEED)]
    seed: u64,
    /// Where the logs and the reports go, and where schemathesis runs
    /// [default: <target>/schemathesis/<UTC time>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Passed on to both schemathesis runs
    #[arg(last = true, value_name = "ARGS")]
    rest: Vec<String>,
}

/// The binary `--schemathesis` names, else the one the environment names,
/// else `schemathesis` on the PATH.
fn schemathesis_binary(flag: Option<PathBuf>, env: Option<PathBuf>) -> PathBuf {
    flag.or(env)
        .unwrap_or_else(|| PathBuf::from("schemathesis"))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let binary = schemathesis_binary(
        args.schemathesis.clone(),
        std::env::var_os(BINARY_VAR).map(PathBuf::from),
    );
    let started = Instant::now();
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .await
        .with_context(|| {
            format!(
                "running {} --version (install it with ci/schemathesis.sh, or pass \
                 --schemathesis PATH)",
                binary.display()
            )
        })?;
    if !version.status.success() {
        bail!("{} --version failed", binary.display());
    }
    eprintln!("{}", String::from_utf8_lossy(&version.stdout).trim());

    let workspace = Workspace::load().await?;
    workspace.build_binaries(false, false).await?;
    let out = workspace.run_dir("schemathesis", args.out.clone())?;
    postgres::ensure_server().await?;
    broker::Installation::install()?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;

    // Schemathesis is one client; 429s would only say so.
    let options = StackOptions::scratch(workspace.bin_dir(false), out.join("logs"), "st")?
        .with_client_limits_out_of_reach();
    let minter = auth::minter(&options.jwt_secret)?;
    let admin = minter.mint("schemathesis-admin", &["admin"], TOKEN_TTL)?;
    let customer = minter.mint("schemathesis", &[], TOKEN_TTL)?;
    eprintln!(
        "starting the stack (logs in {})",
        out.join("logs").display()
    );
    let stack = tokio::select! {
        started = Stack::start(options) => started?,
        _ = interrupt.recv() => bail!("interrupted during start-up"),
    };
    let schema = format!("{}/openapi.json", stack.gateway_url());

    let runs = [
        Run {
            name: "admin",
            token: &admin,
            max_examples: args.max_examples,
            filter: &[],
        },
        Run {
            name: "customer",
            token: &customer,
            max_examples: CUSTOMER_MAX_EXAMPLES.min(args.max_examples),
            filter: &["--include-tag", "admin"],
        },
    ];
    let mut outcome = Ok(Vec::new());
    for run in &runs {
        eprintln!(
            "running schemathesis as {} against {schema} (seed {}, at most {} examples per \
             operation and phase)",
            run.name, args.seed, run.max_examples
        );
        let result = tokio::select! {
            result = schemathesis(&binary, &args, run, &schema, &out) => result,
            _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted")),
        };
        match (result, &mut outcome) {
            (Ok(summary), Ok(summaries)) => {
                summaries.push(summary);
            }
            (Err(e), _) => {
                outcome = Err(e);
                break;
            }
            (Ok(_), Err(_)) => unreachable!("the loop ends at the first error"),
        }
    }

    eprintln!("stopping the stack");
    if let Err(e) = stack.stop().await {
        eprintln!("{e:#}");
    }
    let summaries = outcome?;
    println!();
    let mut passed = true;
    let mut total = 0;
    for summary in &summaries {
        let cases = summary
            .test_cases
            .map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
        println!(
            "schemathesis as {}: {cases} test cases, {}",
            summary.name,
            if summary.passed { "passed" } else { "FAILED" }
        );
        total += summary.test_cases.unwrap_or(0);
        passed &= summary.passed;
    }
    println!(
        "schemathesis: {total} test cases in all, {} in {} s (report and logs in {})",
        if passed { "passed" } else { "FAILED" },
        started.elapsed().as_secs(),
        out.display()
    );
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One `schemathesis run`: who calls, on which operations.
struct Run<'a> {
    name: &'static str,
    token: &'a str,
    max_examples: u32,
    filter: &'a [&'a str],
}

struct Summary {
    name: &'static str,
    passed: bool,
    /// As schemathesis counted them, if its summary could be read.
    test_cases: Option<u64>,
}

/// Runs `binary` in `out`, its output passed through and its count of test
/// cases read from its summary.
async fn schemathesis(
    binary: &Path,
    args: &Args,
    run: &Run<'_>,
    schema: &str,
    out: &Path,
) -> anyhow::Result<Summary> {
    let report_dir = out.join(format!("report-{}", run.name));
    let mut child = Command::new(binary)
        .current_dir(out)
        .arg("run")
        .arg(schema)
        .args(["--checks", CHECKS])
        .args(["--max-examples", &run.max_examples.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--workers", "1"])
        .args(["--header", &format!("Authorization: Bearer {}", run.token)])
        // No example database: nothing written outside `out`, and the
        // seed alone decides what is generated.
        .args(["--generation-database", "none"])
        .args(["--report", "junit"])
        .arg("--report-dir")
        .arg(&report_dir)
        .args(["--request-timeout", "10"])
        // A timeline stream answers for as long as the client listens (the
        // gateway ends it after 5 minutes), which schemathesis waits out on
        // every case; testing/e2e/tests/timeline.rs checks it instead.
        .args(["--exclude-path", "/api/v1/orders/{id}/timeline/stream"])
        .arg("--no-color")
        .args(run.filter)
        .args(&args.rest)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("schemathesis's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut output = Vec::new();
    while let Some(line) = lines
        .next_line()
        .await
        .context("reading schemathesis's output")?
    {
        println!("{line}");
        output.push(line);
    }
    let status = child.wait().await.context("waiting for schemathesis")?;
    Ok(Summary {
        name: run.name,
        passed: status.success(),
        test_cases: test_cases(&output),
    })
}

/// The number of test cases in schemathesis's summary: the line after
/// `Test cases:`, such as `  1234 generated, 1234 passed`.
fn test_cases(output: &[String]) -> Option<u64> {
    let at = output
        .iter()
        .position(|line| line.trim_start().starts_with("Test cases:"))?;
    let line = output.get(at + 1)?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn parse(line: &str) -> Result<Args, clap::Error> {
        match crate::parse(&format!("schemathesis {line}"))? {
            crate::Command::Schemathesis(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_and_the_binary() {
        let defaults = parse("").expect("args");
        assert_eq!(defaults.schemathesis, None);
        assert_eq!(defaults.max_examples, MAX_EXAMPLES);
        assert_eq!(defaults.seed, SEED);
        assert_eq!(
            schemathesis_binary(None, None),
            PathBuf::from("schemathesis")
        );
        assert_eq!(
            schemathesis_binary(None, Some(PathBuf::from("/venv/bin/st"))),
            PathBuf::from("/venv/bin/st")
        );
        let parsed =
            parse("--schemathesis /x --max-examples 5 --seed 7 --out o -- --phases examples")
                .expect("args");
        assert_eq!(
            parsed,
            Args {
                schemathesis: Some(PathBuf::from("/x")),
                max_examples: 5,
                seed: 7,
                out: Some(PathBuf::from("o")),
                rest: args("--phases examples"),
            }
        );
        assert_eq!(
            schemathesis_binary(parsed.schemathesis, Some(PathBuf::from("/env"))),
            PathBuf::from("/x")
        );
        assert!(parse("--max-examples 0").is_err());
        assert!(parse("--seed").is_err());
        assert!(parse("--phases examples").is_err());
    }

    #[test]
    fn the_test_case_count_comes_from_the_summary() {
        let output: Vec<String> = ["", "Test cases:", "  1234 generated, 1230 passed", ""]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(test_cases(&output), Some(1234));
        assert_eq!(test_cases(&[]), None);
    }
}
