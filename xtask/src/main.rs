//! `cargo xtask`: the developer entry point. This file only parses the
//! command line; each command lives in its own module, with its options.
#![forbid(unsafe_code)]

mod browser_tests;
mod certs;
mod chaos;
mod loadtest;
mod run_tests;
mod schemathesis;
mod sqlx_prepare;
mod token;
mod up;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What every command reads from the environment; clap lists only options.
const ENVIRONMENT: &str = "\
Environment:
  SHIPSHAPE_PG_ADMIN_URL   Postgres superuser URL
                           (default postgres://postgres@127.0.0.1:5432/postgres)
  SHIPSHAPE_KAFKA_LIBS     a folder holding Kafka's jars, used instead of
                           fetching them with Maven into ~/.cache/shipshape
  SHIPSHAPE_KAFKA_HEAP     the broker's heap (default 512m)
  JAVA_HOME                the Java (17 or later) the broker runs on
  SHIPSHAPE_SCHEMATHESIS   the schemathesis binary of `schemathesis`
  CARGO_TARGET_DIR         honoured as usual";

/// The developer entry point: run the stack, the tests, the load test, the
/// chaos run and schemathesis, and mint development tokens.
#[derive(Debug, Parser)]
// A repeated option takes its last value, as the command line always has.
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    args_override_self = true,
    after_help = ENVIRONMENT
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the services and run the whole stack locally on the standard
    /// ports (gateway http://127.0.0.1:8080) until Ctrl-C
    Up(up::Args),
    /// Build the services, start one Kafka broker the tests share (each under
    /// a topic prefix of its own), then run every test with `cargo nextest
    /// run --workspace --no-fail-fast NEXTEST_ARGS...`
    Test(run_tests::Args),
    /// Build release binaries, start the stack on free ports with fresh
    /// databases, run `shipshape-loadtest COMMAND ARGS...` against it with
    /// every process's memory and CPU watched, then stop it
    Loadtest(loadtest::Args),
    /// Build the services, start the stack on free ports with fresh
    /// databases, and run schemathesis against the gateway's /openapi.json
    ///
    /// It runs as an admin over every operation, then as a customer over the
    /// admin ones, prints how many test cases ran, then stops the stack;
    /// fails on any 5xx or response that does not match the document.
    Schemathesis(schemathesis::Args),
    /// Build the services, start the stack on free ports with fresh
    /// databases and the demo sign-in on, and drive the web shop in
    /// Chromium with playwright-core (testing/browser), saving a screenshot
    /// of each page; fails if a test does
    BrowserTests(browser_tests::Args),
    /// Build the release binaries, run the checkout load on a stack of its
    /// own while applying a schedule's faults, wait until it is quiet and
    /// check the saga's invariants; fails on any violation
    Chaos(chaos::Args),
    /// Write each crate's .sqlx/ folder, which lets sqlx::query! check the
    /// queries at compile time with no database, from scratch databases
    /// with the migrations; with --check, fail when a folder is out of date
    SqlxPrepare(sqlx_prepare::Args),
    /// Write a development CA and a certificate for each gRPC peer (gateway,
    /// order, inventory) for Compose or services run by hand
    Certs(certs::Args),
    /// Print a development bearer token for the gateway of cargo xtask up,
    /// signed with the secret in ~/.cache/shipshape/dev-jwt-secret
    Token(token::Args),
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Up(args) => block_on(up::run(args)),
        Command::Test(args) => block_on(run_tests::run(args)),
        Command::Loadtest(args) => block_on(loadtest::run(args)),
        Command::Schemathesis(args) => block_on(schemathesis::run(args)),
        Command::Chaos(args) => block_on(chaos::run(args)),
        Command::BrowserTests(args) => block_on(browser_tests::run(args)),
        Command::SqlxPrepare(args) => block_on(sqlx_prepare::run(args)),
        Command::Certs(args) => block_on(certs::run(args)),
        Command::Token(args) => token::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<F: Future<Output = anyhow::Result<ExitCode>>>(task: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(task)
}

/// The command `cargo xtask LINE` names, for the modules' tests.
#[cfg(test)]
fn parse(line: &str) -> Result<Command, clap::Error> {
    Cli::try_parse_from(std::iter::once("xtask").chain(line.split_whitespace()))
        .map(|cli| cli.command)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_is_asked_for_or_given_when_no_command_is() {
        for line in ["help", "--help", "-h", "help up", "up --help", "token -h"] {
            let error = parse(line).expect_err(line);
            assert_eq!(error.kind(), ErrorKind::DisplayHelp, "{line}");
            assert_eq!(error.exit_code(), 0, "{line}");
        }
        let error = parse("").expect_err("no command");
        assert_eq!(
            error.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(error.exit_code(), 2);
        let error = parse("explode").expect_err("no such command");
        assert_eq!(error.kind(), ErrorKind::InvalidSubcommand);
        assert_eq!(error.exit_code(), 2);
    }
}
