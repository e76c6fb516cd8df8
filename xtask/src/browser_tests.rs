//! `cargo xtask browser-tests`: the web shop in a real browser.
//!
//! 1. checks for Chromium (Debian's `chromium`, or `--chromium PATH`) and
//!    for `testing/browser/node_modules` (`npm ci --prefix testing/browser`;
//!    `ci/browser-tests.sh` does both). playwright-core drives that Chromium
//!    and never downloads a browser of its own;
//! 2. builds the service binaries (debug) and starts the whole stack on
//!    free ports with fresh databases (`shipshape_wb<8 hex>_*`, dropped
//!    afterwards) and the demo sign-in on;
//! 3. runs `node --test testing/browser/` against the gateway, with the
//!    screenshots of every page the tests reach going to
//!    `<out>/screenshots` (default `<target>/browser-tests/<UTC time>`);
//! 4. stops the stack and fails if a test did.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use shipshape_testkit::stack::{Service, Stack, StackOptions};
use shipshape_testkit::{broker, postgres};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use crate::workspace::Workspace;

/// Where Debian's `chromium` package puts the browser.
const DEBIAN_CHROMIUM: &str = "/usr/bin/chromium";

#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// The Chromium to drive [default: /usr/bin/chromium]
    #[arg(long, value_name = "PATH", default_value = DEBIAN_CHROMIUM)]
    chromium: PathBuf,
    /// Where the logs and the screenshots go
    /// [default: <target>/browser-tests/<UTC time>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Passed on to `node --test` (e.g. `--test-name-pattern declined`)
    #[arg(last = true, value_name = "ARGS")]
    rest: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if !args.chromium.is_file() {
        bail!(
            "no browser at {} (install Debian's chromium package, as ci/browser-tests.sh \
             does, or pass --chromium PATH)",
            args.chromium.display()
        );
    }
    let workspace = Workspace::load().await?;
    let tests = workspace.root.join("testing/browser");
    if !tests.join("node_modules/playwright-core").is_dir() {
        bail!(
            "playwright-core is not installed: run `npm ci --prefix {}`",
            tests.display()
        );
    }
    workspace.build_binaries(false, false).await?;
    let out = workspace.run_dir("browser-tests", args.out.clone())?;
    postgres::ensure_server().await?;
    broker::Installation::install()?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;

    let options = StackOptions::scratch(workspace.bin_dir(false), out.join("logs"), "wb")?
        .with_env(Service::Gateway, "DEMO_SIGN_IN", "true");
    eprintln!(
        "starting the stack (logs in {})",
        out.join("logs").display()
    );
    let stack = tokio::select! {
        started = Stack::start(options) => started?,
        _ = interrupt.recv() => bail!("interrupted during start-up"),
    };
    let screenshots = out.join("screenshots");
    let mut node = Command::new("node");
    node.arg("--test")
        .arg("--test-concurrency=1")
        .args(&args.rest)
        .arg(tests.join("shop.test.mjs"))
        .current_dir(&tests)
        .env("SHOP_URL", stack.gateway_url())
        .env("SHOP_CHROMIUM", &args.chromium)
        .env("SHOP_SCREENSHOTS", &screenshots)
        .kill_on_drop(true);
    eprintln!("running the browser tests against {}", stack.gateway_url());
    let outcome = tokio::select! {
        status = node.status() => status.context("running node --test"),
        _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted")),
    };
    eprintln!("stopping the stack");
    if let Err(e) = stack.stop().await {
        eprintln!("{e:#}");
    }
    let passed = outcome?.success();
    println!(
        "browser tests: {} in {} s (screenshots in {}, logs in {})",
        if passed { "passed" } else { "FAILED" },
        started.elapsed().as_secs(),
        screenshots.display(),
        out.join("logs").display()
    );
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
