//! `cargo xtask`: the developer entry point. This file only parses the
//! command line; each command lives in its own module.
#![forbid(unsafe_code)]

mod loadtest;
mod run_tests;
mod up;
mod workspace;

use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <command>

Commands:
  up [--release]   build the services and run the whole stack locally on the
                   standard ports (gateway http://127.0.0.1:8080) until Ctrl-C
  test [ARGS...]   build the services, then run every test with
                   `cargo nextest run --workspace --no-fail-fast ARGS...`
  loadtest [--baseline] [--out DIR] [COMMAND [ARGS...]]
                   build release binaries, start the stack on free ports with
                   fresh databases, run `shipshape-loadtest COMMAND ARGS...`
                   (run, capacity, sequential or baseline; default run)
                   against it with every process's memory and CPU watched,
                   then stop it; --baseline adds the pgbench baseline. The
                   report goes to DIR (default <target>/loadtest/<timestamp>)
  help             print this message

Environment:
  SHIPSHAPE_PG_ADMIN_URL   Postgres superuser URL
                           (default postgres://postgres@127.0.0.1:5432/postgres)
  SHIPSHAPE_TANSU          a Tansu broker binary to use instead of the cached one
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
        Some("help" | "--help" | "-h") | Some("up" | "test" | "loadtest") => {
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
