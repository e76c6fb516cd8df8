//! What one checkout costs: the work the system did during a run, counted
//! from the services' own Prometheus metrics and from Postgres's statistics
//! (`pg_stat_database`), read before and after the load and divided by the
//! checkouts that ended; and each process's CPU time per 1,000 of them.
//!
//! The counters are the system's, not the generator's: a figure here is
//! what a checkout made the services do, the generator's own requests
//! (polling an order until it ends) included where they reach a service.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sqlx::Connection as _;

use crate::procstat::{ProcessReport, THIS_PROCESS};
use crate::stats::round3;

/// The counter families read from every service, with what the report
/// calls them.
pub const COUNTERS: [(&str, &str); 5] = [
    ("shipshape_outbox_published_total", "events produced"),
    ("shipshape_events_handled_total", "events consumed"),
    (
        "shipshape_grpc_client_requests_total",
        "gRPC calls (polls included)",
    ),
    (
        "shipshape_http_requests_total",
        "HTTP requests (polls included)",
    ),
    ("shipshape_dead_letters_total", "dead letters"),
];

/// Postgres's statistics settle up to ten seconds after a transaction
/// ends: a backend that goes idle within a second of its last report
/// reports again only after `PGSTAT_IDLE_INTERVAL` (10 s, PostgreSQL 15).
const STATISTICS_SETTLE: Duration = Duration::from_secs(11);

/// Where the counters come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CostSources {
    /// Each service replica's ops server (`NAME=URL`; `/metrics` is
    /// appended).
    pub metrics: Vec<(String, String)>,
    /// A Postgres URL that may read `pg_stat_database`, and the prefix of
    /// the databases under test.
    pub postgres: Option<(String, String)>,
}

impl CostSources {
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.postgres.is_none()
    }
}

/// One database's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DatabaseCounters {
    /// Committed transactions (`xact_commit`), read-only ones included:
    /// every statement outside a transaction is one.
    pub transactions: f64,
    /// Rows inserted, updated and deleted.
    pub rows_written: f64,
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// By report name, summed over every service and label set.
    pub counters: BTreeMap<&'static str, f64>,
    /// By database name, without the prefix.
    pub databases: BTreeMap<String, DatabaseCounters>,
}

/// What one checkout cost, over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CostReport {
    /// The checkouts that ended (terminal orders) during the run.
    pub checkouts: u64,
    /// Messages, calls and requests per checkout, summed over services.
    pub per_checkout: BTreeMap<String, f64>,
    /// Committed transactions per checkout, by database, read-only ones
    /// included (a poll's queries are some).
    pub transactions_per_checkout: BTreeMap<String, f64>,
    /// The same, over every database.
    pub transactions_per_checkout_total: f64,
    /// Rows inserted, updated or deleted per checkout, by database.
    pub rows_written_per_checkout: BTreeMap<String, f64>,
    /// CPU seconds per 1,000 checkouts, by watched process.
    pub cpu_seconds_per_1000: BTreeMap<String, f64>,
    /// The same, over every watched process but the load generator (the
    /// PSP simulator, which stands in for an outside system, included).
    pub system_cpu_seconds_per_1000: f64,
}

/// The sum of every sample of counter `family` in Prometheus text `text`
/// (every label set; not the `_bucket`/`_sum`/`_count` of a histogram
/// whose name merely starts the same).
pub fn sum_family(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?;
            let value = match rest.as_bytes().first() {
                Some(b'{') => &rest[rest.rfind('}')? + 1..],
                Some(b' ') => rest,
                _ => return None,
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Reads every source now.
pub async fn snapshot(sources: &CostSources) -> anyhow::Result<Snapshot> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut snapshot = Snapshot::default();
    for (name, url) in &sources.metrics {
        let url = format!("{}/metrics", url.trim_end_matches('/'));
        let text = http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("reading {name}'s metrics at {url}"))?
            .text()
            .await?;
        for (family, label) in COUNTERS {
            *snapshot.counters.entry(label).or_default() += sum_family(&text, family);
        }
    }
    if let Some((url, prefix)) = &sources.postgres {
        snapshot.databases = database_counters(url, prefix).await?;
    }
    Ok(snapshot)
}

/// Waits until Postgres has counted the run's last transactions, then
/// reads every source.
pub async fn snapshot_after_run(sources: &CostSources) -> anyhow::Result<Snapshot> {
    if sources.postgres.is_some() {
        tokio::time::sleep(STATISTICS_SETTLE).await;
    }
    snapshot(sources).await
}

async fn database_counters(
    url: &str,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, DatabaseCounters>> {
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .context("connecting to Postgres for its statistics")?;
    // A transaction reads the statistics as of its first access; each
    // snapshot is its own statement outside one.
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT datname::text, xact_commit, tup_inserted + tup_updated + tup_deleted \
         FROM pg_stat_database WHERE starts_with(datname, $1)",
    )
    .bind(prefix)
    .fetch_all(&mut connection)
    .await
    .context("reading pg_stat_database")?;
    let _ = connection.close().await;
    Ok(rows
        .into_iter()
        .map(|(name, commits, rows_written)| {
            let name = name.strip_prefix(prefix).unwrap_or(&name).to_owned();
            let counters = DatabaseCounters {
                transactions: commits as f64,
                rows_written: rows_written as f64,
            };
            (name, counters)
        })
        .collect())
}

/// The cost of `checkouts` checkouts, from the snapshots taken around them
/// and the processes' CPU time over the same load.
pub fn cost(
    before: &Snapshot,
    after: &Snapshot,
    checkouts: u64,
    processes: &[ProcessReport],
) -> CostReport {
    let per = |delta: f64| {
        if checkouts == 0 {
            0.0
        } else {
            round3(delta / checkouts as f64)
        }
    };
    let per_checkout = after
        .counters
        .iter()
        .map(|(label, value)| {
            let earlier = before.counters.get(label).copied().unwrap_or(0.0);
            ((*label).to_owned(), per(value - earlier))
        })
        .collect();
    let database_delta = |read: fn(&DatabaseCounters) -> f64| {
        after
            .databases
            .iter()
            .map(|(name, counters)| {
                let earlier = before.databases.get(name).map_or(0.0, read);
                (name.clone(), per(read(counters) - earlier))
            })
            .collect()
    };
    let transactions_per_checkout: BTreeMap<String, f64> = database_delta(|c| c.transactions);
    let system_cpu_seconds: f64 = processes
        .iter()
        .filter(|p| p.name != THIS_PROCESS)
        .map(|p| p.cpu_seconds)
        .sum();
    CostReport {
        checkouts,
        per_checkout,
        transactions_per_checkout_total: round3(transactions_per_checkout.values().sum()),
        transactions_per_checkout,
        rows_written_per_checkout: database_delta(|c| c.rows_written),
        cpu_seconds_per_1000: processes
            .iter()
            .map(|p| (p.name.clone(), per(p.cpu_seconds * 1000.0)))
            .collect(),
        system_cpu_seconds_per_1000: per(system_cpu_seconds * 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# HELP shipshape_events_handled_total Events handled.
# TYPE shipshape_events_handled_total counter
shipshape_events_handled_total{topic=\"order.events\",outcome=\"applied\"} 12
shipshape_events_handled_total{topic=\"payment.events\",outcome=\"skipped\"} 3.5
shipshape_events_handled_total_extra 1000
shipshape_event_handle_duration_seconds_count 99
shipshape_outbox_published_total 7
";

    #[test]
    fn a_family_sums_every_label_set_and_nothing_named_like_it() {
        assert_eq!(sum_family(METRICS, "shipshape_events_handled_total"), 15.5);
        assert_eq!(sum_family(METRICS, "shipshape_outbox_published_total"), 7.0);
        assert_eq!(sum_family(METRICS, "shipshape_dead_letters_total"), 0.0);
    }

    #[test]
    fn a_label_value_may_hold_braces_and_spaces() {
        let text = "shipshape_http_requests_total{route=\"/a {b} c\"} 4\n";
        assert_eq!(sum_family(text, "shipshape_http_requests_total"), 4.0);
    }

    fn process(name: &str, cpu_seconds: f64) -> ProcessReport {
        ProcessReport {
            name: name.to_owned(),
            pids: vec![1],
            rss_max_mib: 0.0,
            rss_mean_mib: 0.0,
            rss_anon_max_mib: 0.0,
            cpu_seconds,
            cpu_percent: 0.0,
            rss_mib_samples: Vec::new(),
        }
    }

    #[test]
    fn the_cost_is_what_changed_divided_by_the_checkouts() {
        let before = Snapshot {
            counters: BTreeMap::from([("events produced", 10.0)]),
            databases: BTreeMap::from([(
                "order".to_owned(),
                DatabaseCounters {
                    transactions: 100.0,
                    rows_written: 50.0,
                },
            )]),
        };
        let after = Snapshot {
            counters: BTreeMap::from([("events produced", 410.0), ("gRPC calls", 200.0)]),
            databases: BTreeMap::from([
                (
                    "order".to_owned(),
                    DatabaseCounters {
                        transactions: 500.0,
                        rows_written: 850.0,
                    },
                ),
                (
                    "shipping".to_owned(),
                    DatabaseCounters {
                        transactions: 100.0,
                        rows_written: 300.0,
                    },
                ),
            ]),
        };
        let report = cost(
            &before,
            &after,
            100,
            &[
                process("broker", 2.5),
                process("order", 1.5),
                process(THIS_PROCESS, 9.0),
            ],
        );
        assert_eq!(report.checkouts, 100);
        assert_eq!(report.per_checkout["events produced"], 4.0);
        // A counter that first appeared during the run counts in full.
        assert_eq!(report.per_checkout["gRPC calls"], 2.0);
        assert_eq!(report.transactions_per_checkout["order"], 4.0);
        assert_eq!(report.transactions_per_checkout["shipping"], 1.0);
        assert_eq!(report.rows_written_per_checkout["order"], 8.0);
        assert_eq!(report.transactions_per_checkout_total, 5.0);
        assert_eq!(report.cpu_seconds_per_1000["broker"], 25.0);
        // The generator is on the machine, but not part of the system.
        assert_eq!(report.system_cpu_seconds_per_1000, 40.0);
    }

    #[test]
    fn no_checkouts_cost_nothing_rather_than_infinity() {
        let report = cost(
            &Snapshot::default(),
            &Snapshot {
                counters: BTreeMap::from([("events produced", 5.0)]),
                databases: BTreeMap::new(),
            },
            0,
            &[process("order", 1.0)],
        );
        assert_eq!(report.per_checkout["events produced"], 0.0);
        assert_eq!(report.cpu_seconds_per_1000["order"], 0.0);
    }
}
