//! A load run: the open model (checkouts arrive on a schedule, whatever the
//! system does) or the closed model (N shoppers, each starting a checkout
//! when the last one ended), with the stock kept up and a progress line.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::checkout::Shop;
use crate::client::{Gateway, Secret};
use crate::recorder::{Recorder, Totals};
use crate::scenario::{Mix, Path, Popularity, ProductPicker};
use crate::schedule::Schedule;
use crate::stock::{StockKeeper, StockReport};

/// How checkouts are started.
#[derive(Clone, Debug)]
pub enum Load {
    /// Checkouts start when the schedule says, regardless of how many are
    /// still running: what real shoppers do, and the only model in which
    /// queueing shows up in the latencies.
    Open(Schedule),
    /// `users` shoppers for `duration`, each starting its next checkout as
    /// soon as its last one ended. A slow system slows the load down, so
    /// latencies look better than shoppers would see them; useful to find
    /// the throughput of a fixed concurrency.
    Closed { users: u32, duration: Duration },
}

impl Load {
    pub fn duration(&self) -> Duration {
        match self {
            Load::Open(schedule) => schedule.duration(),
            Load::Closed { duration, .. } => *duration,
        }
    }

    fn describe(&self) -> LoadReport {
        match self {
            Load::Open(schedule) => LoadReport {
                model: "open",
                rate: Some(schedule.peak()),
                users: None,
                duration_secs: schedule.duration().as_secs_f64(),
            },
            Load::Closed { users, duration } => LoadReport {
                model: "closed",
                rate: None,
                users: Some(*users),
                duration_secs: duration.as_secs_f64(),
            },
        }
    }
}

/// Everything a run needs; [`RunOptions::new`] has the defaults.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The gateway's base URL.
    pub gateway: String,
    pub load: Load,
    /// The ramp of an open run, for the report (the schedule has it).
    pub ramp: Duration,
    pub mix: Mix,
    pub popularity: Popularity,
    pub poll_interval: Duration,
    pub order_timeout: Duration,
    pub request_timeout: Duration,
    /// Most checkouts in flight at once; an open-model arrival beyond it is
    /// counted as `generator_overloaded`.
    pub max_in_flight: usize,
    /// The gateway's `ADMIN_TOKEN`, to restock; `None` buys from the seeded
    /// stock.
    pub admin_token: Option<Secret>,
    /// The customer's bearer token orders are placed and read with.
    pub token: Option<Secret>,
    /// Units each product is kept near.
    pub stock_target: i64,
    pub stock_check_interval: Duration,
    /// Products valid checkouts never buy (and the keeper never restocks):
    /// the deliberately scarce ones.
    pub reserved_skus: Vec<String>,
    /// What out-of-stock checkouts ask too much of.
    pub out_of_stock_sku: String,
    /// Print a progress line to stderr while running.
    pub progress: bool,
}

impl RunOptions {
    pub fn new(gateway: impl Into<String>, load: Load) -> Self {
        Self {
            gateway: gateway.into(),
            load,
            ramp: Duration::ZERO,
            mix: Mix::default(),
            popularity: Popularity::Uniform,
            poll_interval: Duration::from_millis(50),
            // Longer than the saga deadline (30 s), so a timed-out order
            // still ends terminal within it.
            order_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 10_000,
            admin_token: None,
            token: None,
            stock_target: 20_000,
            stock_check_interval: Duration::from_secs(2),
            reserved_skus: vec!["SKU-0019".to_owned(), "SKU-0020".to_owned()],
            out_of_stock_sku: "SKU-0020".to_owned(),
            progress: true,
        }
    }
}

/// The load a run applied, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub model: &'static str,
    /// Open model: the rate at the plateau, checkouts per second.
    pub rate: Option<f64>,
    /// Closed model: the number of shoppers.
    pub users: Option<u32>,
    pub duration_secs: f64,
}

/// One run's results.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub load: LoadReport,
    pub ramp_secs: f64,
    pub mix: String,
    pub popularity: String,
    pub poll_interval_ms: u64,
    /// How long it took after the last arrival until every checkout ended.
    pub drain_secs: f64,
    #[serde(flatten)]
    pub totals: Totals,
    pub stock: StockReport,
}

impl RunReport {
    /// Whether every number adds up: each placed order ended terminal or
    /// was counted as not terminal, and the outcomes sum to the terminal
    /// orders.
    pub fn counts_match(&self) -> bool {
        let outcomes: u64 = self.totals.outcomes.values().map(|o| o.total).sum();
        self.totals.placed == self.totals.terminal + self.totals.not_terminal
            && outcomes == self.totals.terminal
            && self.totals.placed <= self.totals.arrivals
    }
}

/// Runs the load against the gateway and reports.
pub async fn run(options: &RunOptions) -> anyhow::Result<RunReport> {
    let gateway = Gateway::new(&options.gateway, options.request_timeout)?
        .with_customer(options.token.clone());
    let skus = prepare_catalog(&gateway, options).await?;

    let mut stock = StockReport {
        method: "none",
        target: options.stock_target,
        ..StockReport::default()
    };
    let (stop_keeper, keeper_stopped) = watch::channel(false);
    let keeper = match &options.admin_token {
        Some(token) => {
            stock.method = "admin_api";
            let keeper =
                StockKeeper::new(gateway.clone(), token.clone(), &skus, options.stock_target);
            keeper
                .top_up(options.stock_target, &mut stock)
                .await
                .context("topping up the stock before the run")?;
            Some(keeper.spawn(options.stock_check_interval, keeper_stopped, stock.clone()))
        }
        None => {
            warn_if_stock_runs_out(&gateway, options, &skus).await;
            None
        }
    };

    let started = Instant::now();
    let recorder = Arc::new(Recorder::new(started));
    let shop = Arc::new(Shop {
        gateway,
        recorder: recorder.clone(),
        mix: options.mix.clone(),
        picker: ProductPicker::new(options.popularity, skus.len())?,
        skus,
        out_of_stock_sku: options.out_of_stock_sku.clone(),
        poll_interval: options.poll_interval,
        order_timeout: options.order_timeout,
        run_id: run_id(),
    });
    let in_flight = Arc::new(Semaphore::new(options.max_in_flight));
    let progress = options.progress.then(|| {
        spawn_progress(
            recorder.clone(),
            in_flight.clone(),
            options.max_in_flight,
            options.load.duration(),
        )
    });

    match &options.load {
        Load::Open(schedule) => drive_open(&shop, schedule, &in_flight).await,
        Load::Closed { users, duration } => drive_closed(&shop, *users, *duration).await,
    }
    let arrivals_done = Instant::now();
    // Every checkout holds a permit until it ends: taking them all waits for
    // the last one.
    let permits = u32::try_from(options.max_in_flight).unwrap_or(u32::MAX);
    let _all = in_flight
        .acquire_many(permits)
        .await
        .context("waiting for the last checkouts")?;
    let drain = arrivals_done.elapsed();

    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    // Stop the keeper and take its counts (a failed task leaves the counts
    // from before the run).
    let _ = stop_keeper.send(true);
    if let Some(keeper) = keeper {
        stock = keeper.await.unwrap_or(stock);
    }

    let load_duration = options.load.duration();
    Ok(RunReport {
        load: options.load.describe(),
        ramp_secs: options.ramp.as_secs_f64(),
        mix: options.mix.to_string(),
        popularity: options.popularity.to_string(),
        poll_interval_ms: u64::try_from(options.poll_interval.as_millis()).unwrap_or(u64::MAX),
        drain_secs: crate::stats::round3(drain.as_secs_f64()),
        totals: recorder.totals(load_duration),
        stock,
    })
}

/// Reads the catalog and returns the products valid checkouts buy; checks
/// that the out-of-stock product can be asked too much of in one line.
async fn prepare_catalog(gateway: &Gateway, options: &RunOptions) -> anyhow::Result<Vec<String>> {
    let products = gateway
        .list_products()
        .await
        .with_context(|| format!("reading the catalog from {}", gateway.base_url()))?;
    let skus: Vec<String> = products
        .iter()
        .filter(|p| !options.reserved_skus.contains(&p.sku))
        .map(|p| p.sku.clone())
        .collect();
    if skus.is_empty() {
        bail!("the catalog has no products the load test may buy");
    }
    if options.mix.share(Path::OutOfStock) > 0.0 {
        let Some(scarce) = products.iter().find(|p| p.sku == options.out_of_stock_sku) else {
            bail!(
                "the out-of-stock product {} is not in the catalog",
                options.out_of_stock_sku
            );
        };
        if scarce.available >= 100 {
            bail!(
                "{} has {} units; out-of-stock checkouts need a product with fewer than 100",
                scarce.sku,
                scarce.available
            );
        }
    }
    Ok(skus)
}

/// Without restocking, says so when the run will likely buy more than the
/// shelves hold (valid checkouts then end `out_of_stock` and count as
/// errors).
async fn warn_if_stock_runs_out(gateway: &Gateway, options: &RunOptions, skus: &[String]) {
    let Ok(products) = gateway.list_products().await else {
        return;
    };
    let available: i64 = products
        .iter()
        .filter(|p| skus.contains(&p.sku))
        .map(|p| p.available)
        .sum();
    let expected_valid = match &options.load {
        Load::Open(schedule) => schedule.expected_arrivals() * options.mix.share(Path::Valid),
        Load::Closed { .. } => return,
    };
    if expected_valid > available as f64 / 2.0 {
        eprintln!(
            "warning: about {expected_valid:.0} units will be bought from {available} in stock \
             and nothing is restocked (no --admin-token); popular products may run out"
        );
    }
}

/// A prefix for the run's idempotency keys, so two runs
/// against one stack never replay each other's orders.
fn run_id() -> String {
    format!("lt{:08x}", fastrand::u32(..))
}

async fn drive_open(shop: &Arc<Shop>, schedule: &Schedule, in_flight: &Arc<Semaphore>) {
    let start = shop.recorder.started();
    for (index, offset) in (0u64..).zip(schedule.arrivals()) {
        let due = start + offset;
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            shop.recorder.overloaded(due);
            continue;
        };
        shop.recorder.arrival(due, Instant::now());
        let shop = shop.clone();
        tokio::spawn(async move {
            shop.checkout(index, due).await;
            drop(permit);
        });
    }
}

async fn drive_closed(shop: &Arc<Shop>, users: u32, duration: Duration) {
    let end = shop.recorder.started() + duration;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut shoppers = tokio::task::JoinSet::new();
    for _ in 0..users {
        let shop = shop.clone();
        let next = next.clone();
        shoppers.spawn(async move {
            while Instant::now() < end {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let due = Instant::now();
                shop.recorder.arrival(due, due);
                shop.checkout(index, due).await;
            }
        });
    }
    while shoppers.join_next().await.is_some() {}
}

/// Prints, every second, the rate of the last second, p99s so far and the
/// errors: on one rewritten line on a terminal, else every tenth second.
fn spawn_progress(
    recorder: Arc<Recorder>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    duration: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let terminal = std::io::stderr().is_terminal();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = recorder.progress();
        let mut seconds = 0u64;
        loop {
            tick.tick().await;
            seconds += 1;
            let now = recorder.progress();
            let ms = |d: Option<Duration>| {
                d.map_or_else(
                    || "-".to_owned(),
                    |d| format!("{:.1}", d.as_secs_f64() * 1e3),
                )
            };
            let phase = if Duration::from_secs(seconds) <= duration {
                format!("{seconds:>4}/{}s", duration.as_secs())
            } else {
                format!("{seconds:>4}s draining")
            };
            let line = format!(
                "[{phase}] arrivals {}/s, terminal {}/s, in flight {}, POST p99 {} ms, \
                 saga p99 {} ms, failed {}",
                now.arrivals - last.arrivals,
                now.terminal - last.terminal,
                max_in_flight - in_flight.available_permits(),
                ms(now.place_p99),
                ms(now.saga_p99),
                now.failed,
            );
            let mut stderr = std::io::stderr().lock();
            // Progress output is best effort: a closed stderr must not stop
            // the run.
            if terminal {
                let _ = write!(stderr, "\r\x1b[2K{line}");
                let _ = stderr.flush();
            } else if seconds.is_multiple_of(10) {
                let _ = writeln!(stderr, "{line}");
            }
            last = now;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_differ() {
        assert_ne!(run_id(), run_id());
        assert!(run_id().starts_with("lt"));
    }
}
