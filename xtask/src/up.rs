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
use shipshape_testkit::stack::{Service, Stack, StackOptions};
use shipshape_testkit::{auth, broker};
use tokio::signal::unix::{SignalKind, signal};

use crate::workspace::Workspace;

/// An order to try once the stack is up (the shape `e2e` tests use).
const EXAMPLE_ORDER: &str = concat!(
    r#"{"items":[{"sku":"SKU-0001","quantity":1}],"payment":{"card_token":"tok_visa"},"#,
    r#""shipping_address":{"name":"Ada Lovelace","line1":"1 Main St","city":"Berlin","#,
    r#""postal_code":"10115","country":"DE"}}"#,
);

/// Runs the stack until a signal; `args` may hold `--release`.
pub async fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let release = match args.as_slice() {
        [] => false,
        [flag] if flag == "--release" => true,
        _ => bail!(
            "`cargo xtask up` takes only --release, got: {}",
            args.join(" ")
        ),
    };
    let workspace = Workspace::load().await?;
    workspace.build_binaries(release, false).await?;
    broker::Installation::install()?;

    // From here on a signal stops the stack in order instead of killing us
    // (the processes run in their own process groups, so they do not get
    // the terminal's Ctrl-C themselves).
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;

    let log_dir = workspace.root.join(".shipshape/logs");
    let mut options = StackOptions::local(workspace.bin_dir(release), &log_dir);
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
fn report_exits(stack: &mut Stack, reported: &mut BTreeSet<Service>) -> anyhow::Result<()> {
    for (service, status) in stack.exited()? {
        if reported.insert(service) {
            eprintln!(
                "warning: {service} exited ({status}); see {}",
                stack.log_path(service).display()
            );
        }
    }
    Ok(())
}

fn print_banner(stack: &Stack, log_dir: &Path) {
    let gateway = stack.gateway_url();
    println!();
    println!("Shipshape is up.");
    println!("  gateway API    {gateway}");
    println!(
        "  PSP simulator  {}   (admin API of the card processor stand-in)",
        stack.psp_url()
    );
    println!("  broker         {}", stack.broker_address());
    println!("  readiness");
    for service in Service::ALL {
        println!(
            "    {:<14} {}/readyz",
            service.name(),
            stack.ops_url(service)
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
    fn the_example_order_is_json() {
        let order: serde_json::Value = serde_json::from_str(EXAMPLE_ORDER).expect("valid JSON");
        assert_eq!(order["items"][0]["sku"], "SKU-0001");
    }
}
