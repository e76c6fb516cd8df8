//! The one-transaction baseline: what a monolith doing a checkout's writes
//! in one transaction reaches against the same Postgres.
//!
//! `pgbench` runs `baseline/checkout.sql` (every row a confirmed checkout
//! writes across the four services, with the same status changes) against
//! the services' own tables, created by their own migrations in one scratch
//! database this module creates and drops, so the baseline always writes
//! exactly the schema the services do and never touches their databases.
//! Left out is what only the event-driven design needs: the outbox and
//! inbox tables. The
//! saga's throughput divided by the baseline's transactions per second is
//! the share of a monolith's write throughput the microservices reach.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::process::Command;

/// The business tables of the four services, as their migrations create
/// them (inventory's also seeds the catalog), then stock that a baseline
/// run can never exhaust.
const SCHEMA: &[&str] = &[
    include_str!("../../services/order/migrations/100_orders.sql"),
    include_str!("../../services/order/migrations/101_order_trace_context.sql"),
    include_str!("../../services/order/migrations/102_orders_by_customer.sql"),
    include_str!("../../services/inventory/migrations/100_inventory.sql"),
    include_str!("../../services/payment/migrations/100_payments.sql"),
    include_str!("../../services/payment/migrations/101_payment_trace_context.sql"),
    include_str!("../../services/shipping/migrations/100_shipments.sql"),
    "UPDATE products SET available = available + 1000000000, \
     stock_received = stock_received + 1000000000;",
];

/// [`SCHEMA`] as one script for `psql --command`, which runs it in one
/// transaction: an index is built there plainly, not `CONCURRENTLY` (which
/// only matters for a live table, and cannot run in a transaction).
fn schema_script() -> String {
    SCHEMA
        .join("\n")
        .replace("CREATE INDEX CONCURRENTLY", "CREATE INDEX")
}
/// The transaction pgbench runs.
const SCRIPT: &str = include_str!("../baseline/checkout.sql");

/// How to run the baseline.
#[derive(Clone, Debug)]
pub struct BaselineOptions {
    /// A Postgres URL of a role that may create databases; the scratch
    /// database is created on the same server.
    pub database_url: String,
    pub duration: Duration,
    /// Concurrent connections (`pgbench -c`).
    pub clients: u32,
    /// `pgbench` and `psql` executables.
    pub pgbench: PathBuf,
    pub psql: PathBuf,
}

impl BaselineOptions {
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            duration: Duration::from_secs(30),
            // Like the services' connection pools: enough concurrency for
            // group commit, few enough not to thrash two cores.
            clients: 8,
            pgbench: PathBuf::from("pgbench"),
            psql: PathBuf::from("psql"),
        }
    }
}

/// What pgbench measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaselineReport {
    /// Checkout transactions per second (pgbench's figure, without the
    /// initial connection time).
    pub tps: f64,
    pub transactions: u64,
    pub failed_transactions: u64,
    pub latency_avg_ms: Option<f64>,
    pub clients: u32,
    pub duration_secs: f64,
    pub script: &'static str,
}

/// Creates the scratch database, runs pgbench against it, and drops it
/// (also when pgbench fails).
pub async fn run(options: &BaselineOptions) -> anyhow::Result<BaselineReport> {
    let name = format!("shipshape_baseline_{:08x}", fastrand::u32(..));
    let scratch_url = with_database(&options.database_url, &name)?;
    psql(
        options,
        &options.database_url,
        &format!("CREATE DATABASE {name}"),
    )
    .await
    .context("creating the baseline's scratch database")?;
    let result = measure(options, &scratch_url).await;
    let dropped = psql(
        options,
        &options.database_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await;
    let report = result?;
    if let Err(e) = dropped {
        eprintln!("warning: could not drop the baseline database {name}: {e:#}");
    }
    Ok(report)
}

async fn measure(options: &BaselineOptions, scratch_url: &str) -> anyhow::Result<BaselineReport> {
    psql(options, scratch_url, &schema_script())
        .await
        .context("creating the baseline's tables")?;
    let script = std::env::temp_dir().join(format!(
        "shipshape-baseline-{}-{:08x}.sql",
        std::process::id(),
        fastrand::u32(..)
    ));
    // A few kilobytes, once: blocking the runtime for it is harmless.
    std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let output = pgbench(options, &script, scratch_url).await;
    // The script is a copy; losing it is harmless.
    let _ = std::fs::remove_file(&script);
    let output = output?;
    parse(&output, options)
}

async fn pgbench(options: &BaselineOptions, script: &Path, url: &str) -> anyhow::Result<String> {
    let threads = options.clients.min(num_cpus()).max(1);
    let output = Command::new(&options.pgbench)
        // No vacuum of pgbench's own tables (there are none); prepared
        // statements, as the services' drivers use.
        .args(["--no-vacuum", "--protocol=prepared"])
        .arg(format!("--client={}", options.clients))
        .arg(format!("--jobs={threads}"))
        .arg(format!("--time={}", options.duration.as_secs().max(1)))
        .arg("--file")
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", options.pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "pgbench failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Runs `sql` with psql, stopping at the first error.
async fn psql(options: &BaselineOptions, url: &str, sql: &str) -> anyhow::Result<()> {
    let output = Command::new(&options.psql)
        .args([
            "--quiet",
            "--no-psqlrc",
            "--set",
            "ON_ERROR_STOP=1",
            "--command",
        ])
        .arg(sql)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", options.psql.display()))?;
    if !output.status.success() {
        bail!(
            "psql failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        bail!("{url:?} is not a postgres:// URL");
    }
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.into())
}

fn num_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1)
}

/// The figures of pgbench's summary.
fn parse(output: &str, options: &BaselineOptions) -> anyhow::Result<BaselineReport> {
    let value = |prefix: &str| {
        output
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
    };
    let tps: f64 = value("tps = ")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench's output:\n{output}"))?;
    let transactions = value("number of transactions actually processed:")
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no transaction count in pgbench's output:\n{output}"))?;
    Ok(BaselineReport {
        tps: crate::stats::round3(tps),
        transactions,
        failed_transactions: value("number of failed transactions:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        latency_avg_ms: value("latency average =").and_then(|v| v.parse().ok()),
        clients: options.clients,
        duration_secs: options.duration.as_secs_f64(),
        script: "loadtest/baseline/checkout.sql",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: /tmp/shipshape-baseline.sql
scaling factor: 1
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 30 s
number of transactions actually processed: 25650
number of failed transactions: 0 (0.000%)
latency average = 9.357 ms
initial connection time = 42.032 ms
tps = 854.963413 (without initial connection time)
";

    #[test]
    fn pgbench_output_is_parsed() {
        let report = parse(OUTPUT, &BaselineOptions::new("postgres://x/y")).expect("parsed");
        assert_eq!(report.tps, 854.963);
        assert_eq!(report.transactions, 25650);
        assert_eq!(report.failed_transactions, 0);
        assert_eq!(report.latency_avg_ms, Some(9.357));
        assert_eq!(report.clients, 8);
        assert!(parse("pgbench: error", &BaselineOptions::new("postgres://x/y")).is_err());
    }

    #[test]
    fn the_scratch_database_replaces_the_urls_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "scratch").expect("url"),
            "postgres://postgres@127.0.0.1:5432/scratch"
        );
        assert_eq!(
            with_database("postgresql://u:p@db/app?sslmode=require", "s").expect("url"),
            "postgresql://u:p@db/s?sslmode=require"
        );
        assert!(with_database("http://example/x", "s").is_err());
        assert!(with_database("not a url", "s").is_err());
    }

    #[test]
    fn the_script_writes_every_table_of_the_schema() {
        for table in [
            "orders",
            "order_lines",
            "products",
            "reservations",
            "reservation_lines",
            "payments",
            "shipments",
        ] {
            assert!(
                SCHEMA
                    .iter()
                    .any(|sql| sql.contains(&format!("CREATE TABLE {table} ("))),
                "{table}"
            );
            let written = SCRIPT.contains(&format!("INSERT INTO {table} "))
                || SCRIPT.contains(&format!("UPDATE {table} "));
            assert!(written, "{table} is not written");
        }
    }
}
