//! `cargo xtask`: the developer entry point. This file only parses the
//! command line; each command lives in its own module.
#![forbid(unsafe_code)]

mod chaos;
mod loadtest;
mod run_tests;
mod schemathesis;
mod token;
mod up;
mod workspace;

use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <command>

Commands:
  up [--release] [--replicas N]
                   build the services and run the whole stack locally on the
                   standard ports (gateway http://127.0.0.1:8080) until Ctrl-C;
                   N (1-10) processes of each of order, inventory, payment and
                   shipping, the Nth on ports 10 x (N-1) above the first's
  test [ARGS...]   build the services, start one Kafka broker the tests share
                   (each under a topic prefix of its own), then run every
                   test with `cargo nextest run --workspace --no-fail-fast
                   ARGS...`
  loadtest [--baseline] [--tracing off|on|compare] [--replicas N[,M...]] [--out DIR] [COMMAND [ARGS...]]
                   build release binaries, start the stack on free ports with
                   fresh databases, run `shipshape-loadtest COMMAND ARGS...`
                   (run, capacity, sequential or baseline; default run)
                   against it with every process's memory and CPU watched,
                   then stop it; --baseline adds the pgbench baseline;
                   --tracing on exports every span to a collector in xtask,
                   compare runs `run` with tracing off, then on, and prints
                   both; --replicas runs N of each saga service, and with a
                   list runs the command once per count on a fresh stack
                   and prints them side by side. The report goes to DIR
                   (default <target>/loadtest/<timestamp>)
  schemathesis [--schemathesis PATH] [--max-examples N] [--seed N] [--out DIR] [-- ARGS...]
                   build the services, start the stack on free ports with
                   fresh databases, run schemathesis against the gateway's
                   /openapi.json (as an admin over every operation, then as
                   a customer over the admin ones), print how many test
                   cases ran, then stop it; fails on any 5xx or response
                   that does not match the document. The binary is PATH,
                   else $SHIPSHAPE_SCHEMATHESIS, else `schemathesis` (see
                   ci/schemathesis.sh); ARGS go to `schemathesis run`
  chaos [SCHEDULE.toml] [--out DIR] [--quiet]
                   build the release binaries,
                   then run the checkout load on a stack of its own while
                   applying the schedule's faults (default
                   chaos/schedules/ci.toml; chaos/schedules/long.toml is
                   10 000 orders), wait until it is quiet and check the
                   saga's invariants; fails on any violation. The report
                   goes to DIR (default <target>/chaos/<timestamp>)
  token --subject ID [--scope S]... [--ttl-secs N]
                   print a development bearer token for the gateway of
                   `up` (e.g. --scope admin for restocking), signed with the
                   secret in ~/.cache/shipshape/dev-jwt-secret
  help             print this message

Environment:
  SHIPSHAPE_PG_ADMIN_URL   Postgres superuser URL
                           (default postgres://postgres@127.0.0.1:5432/postgres)
  SHIPSHAPE_KAFKA_LIBS     a folder holding Kafka's jars, used instead of
                           fetching them with Maven into ~/.cache/shipshape
  SHIPSHAPE_KAFKA_HEAP     the broker's heap (default 512m)
  JAVA_HOME                the Java (17 or later) the broker runs on
  SHIPSHAPE_SCHEMATHESIS   the schemathesis binary of `schemathesis`
  CARGO_TARGET_DIR         honoured as usual
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    let wants_help = rest.iter().any(|arg| arg == "--help" || arg == "-h");
    let outcome = match command.as_deref() {
        Some("up") if !wants_help => block_on(up::run(rest)),
        Some("test") if !wants_help => block_on(run_tests::run(rest)),
        Some("loadtest") if !wants_help => block_on(loadtest::run(rest)),
        Some("schemathesis") if !wants_help => block_on(schemathesis::run(rest)),
        Some("chaos") if !wants_help => block_on(chaos::run(rest)),
        Some("token") if !wants_help => token::run(rest),
        Some("help" | "--help" | "-h")
        | Some("up" | "test" | "loadtest" | "schemathesis" | "chaos" | "token") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprint!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
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
