//! `cargo xtask up`: the whole stack as local processes on the standard
//! ports, without Docker. Builds the services, installs the broker if it is
//! missing, starts everything, prints where to reach it, and on Ctrl-C (or
//! SIGTERM) stops it gracefully: gateway first, broker last. The databases
//! (`shipshape_order`, ...) are kept between runs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use shipshape_testkit::stack::{Replica, Service, Stack, StackOptions};
use shipshape_testkit::{auth, broker};
use tokio::signal::unix::{SignalKind, signal};

use crate::workspace::Workspace;

/// An order to try once the stack is up (the shape `e2e` tests use).
const EXAMPLE_ORDER: &str = concat!(
    r#"{"items":[{"sku":"SKU-0001","quantity":1}],"payment":{"card_token":"tok_visa"},"#,
    r#""shipping_address":{"name":"Ada Lovelace","line1":"1 Main St","city":"Berlin","#,
    r#""postal_code":"10115","country":"DE"}}"#,
);

/// What `cargo xtask up` was asked for.
#[derive(Debug, PartialEq, Eq, clap::Args)]
pub struct Args {
    /// Optimised binaries (cargo build --release)
    #[arg(long)]
    release: bool,
    /// Processes of each of order, inventory, payment and shipping, from 1
    /// to 10; the Nth listens on ports 10 x (N-1) above the first's
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = replica_count)]
    replicas: usize,
}

/// The most replicas `--replicas` takes: their standard ports are 10 apart
/// (order's gRPC 50051, 50061, ...; its ops port 9101, 9111, ...), and ten
/// of each keep within 50051-50142 and 9100-9195.
const MAX_REPLICAS: usize = 10;

fn replica_count(text: &str) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|n| (1..=MAX_REPLICAS).contains(n))
        .ok_or_else(|| format!("expected a number from 1 to {MAX_REPLICAS}"))
}

/// Runs the stack until a signal.
pub async fn run(Args { release, replicas }: Args) -> anyhow::Result<ExitCode> {
    let workspace = Workspace::load().await?;
    workspace.build_binaries(release, false).await?;
    broker::Installation::install()?;

    // From here on a signal stops the stack in order instead of killing us
    // (the processes run in their own process groups, so they do not get
    // the terminal's Ctrl-C themselves).
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;

    let log_dir = workspace.root.join(".shipshape/logs");
    // The web shop signs people in as its demo accounts, with the dev secret.
    let mut options = StackOptions::local(workspace.bin_dir(release), &log_dir)
        .with_replicas(replicas, replicas)
        .with_env(Service::Gateway, "DEMO_SIGN_IN", "true");
    options.jwt_secret = auth::dev_secret()?;
    eprintln!("starting the stack (logs in {})", log_dir.display());
    let mut stack = tokio::select! {
        started = Stack::start(options) => started?,
        // Dropping the unfinished start kills whatever it had started.
        _ = interrupt.recv() => bail!("interrupted during start-up"),
        _ = terminate.recv() => bail!("terminated during start-up"),
    };
    print_banner(&stack, &log_dir);

    let mut reported = BTreeSet::new();
    let mut check = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = check.tick() => report_exits(&mut stack, &mut reported)?,
        }
    }

    eprintln!("stopping (gateway first, broker last; Ctrl-C again kills everything at once)...");
    let stopped = tokio::select! {
        stopped = stack.stop() => stopped,
        // Dropping the unfinished stop kills whatever still runs.
        _ = interrupt.recv() => Err(anyhow!("interrupted again: killed what was still running")),
    };
    if let Err(e) = &stopped {
        eprintln!("{e:#}");
    }
    println!("stopped");
    Ok(if stopped.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Says once about each process that has exited while the stack runs.
fn report_exits(stack: &mut Stack, reported: &mut BTreeSet<Replica>) -> anyhow::Result<()> {
    for (replica, status) in stack.exited()? {
        if reported.insert(replica) {
            eprintln!(
                "warning: {replica} exited ({status}); see {}",
                stack.log_path(replica).display()
            );
        }
    }
    Ok(())
}

fn print_banner(stack: &Stack, log_dir: &Path) {
    let gateway = stack.gateway_url();
    println!();
    println!("Shipshape is up.");
    println!("  web shop       {gateway}/   (sign in as alice, bob or ops, the operator)");
    println!("  gateway API    {gateway}");
    println!(
        "  PSP simulator  {}   (admin API of the card processor stand-in)",
        stack.psp_url()
    );
    println!(
        "  broker         {}   (SASL_PLAINTEXT, SCRAM-SHA-512; super user `{}`, password in {})",
        stack.broker_address(),
        broker::ADMIN_USER,
        stack.broker_admin_password_file().display()
    );
    if let Some(pki) = stack.pki() {
        println!(
            "  gRPC           mutual TLS; the CA and each peer's certificate in {}",
            pki.ca_path()
                .parent()
                .map(|dir| dir.display().to_string())
                .unwrap_or_default()
        );
    }
    println!("  readiness");
    for replica in stack.replicas() {
        println!(
            "    {:<14} {}/readyz",
            replica.name(),
            stack.ops_url(replica)
        );
    }
    // The password is the role's name: a development default, shown so
    // the URL can be pasted into psql.
    println!("  databases");
    for service in Service::WITH_DATABASE {
        if let Some(url) = stack.database_url(service) {
            println!("    {:<14} {url}", service.name());
        }
    }
    println!("  logs           {}/<process>.log", log_dir.display());
    println!();
    println!("Try:");
    println!("  curl -s {}/readyz", stack.ops_url(Service::Gateway));
    println!("  curl -s {gateway}/api/v1/products");
    println!("  TOKEN=$(cargo xtask token --subject alice)");
    println!(
        "  curl -s -X POST {gateway}/api/v1/orders -H \"Authorization: Bearer $TOKEN\" \\\n       \
         -H 'content-type: application/json' \\\n       \
         -H \"Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)\" -d '{EXAMPLE_ORDER}'"
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" {gateway}/api/v1/orders/<order_id from the answer above>"
    );
    println!();
    println!("Press Ctrl-C to stop everything.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_a_number_from_one_to_ten() {
        let parse = |line: &str| -> Result<Args, clap::Error> {
            match crate::parse(&format!("up {line}"))? {
                crate::Command::Up(args) => Ok(args),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            parse("").expect("none"),
            Args {
                release: false,
                replicas: 1
            }
        );
        assert_eq!(
            parse("--replicas 3 --release").expect("both"),
            Args {
                release: true,
                replicas: 3
            }
        );
        assert_eq!(parse("--replicas=2").expect("with =").replicas, 2);
        for bad in [
            "--replicas",
            "--replicas 0",
            "--replicas 11",
            "--replicas two",
            "--fast",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_example_order_is_json() {
        let order: serde_json::Value = serde_json::from_str(EXAMPLE_ORDER).expect("valid JSON");
        assert_eq!(order["items"][0]["sku"], "SKU-0001");
    }
}
