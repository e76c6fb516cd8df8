//! The report of a `run` or `capacity` command: a text table, JSON and an
//! SVG chart, written to an output directory.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::baseline::BaselineReport;
use crate::capacity::CapacityReport;
use crate::chart::{self, Marker, Panel, Series};
use crate::cost::CostReport;
use crate::procstat::ProcessReport;
use crate::recorder::WindowReport;
use crate::run::RunReport;
use crate::stats::{LatencySummary, ms};

/// Everything one invocation measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub started_at: String,
    pub command: String,
    pub gateway: String,
    pub machine: Machine,
    /// A `run` command's results.
    pub run: Option<RunReport>,
    /// A `capacity` command's results.
    pub capacity: Option<CapacityReport>,
    pub baseline: Option<BaselineComparison>,
    /// Memory and CPU of the watched processes during the load.
    pub processes: Vec<ProcessReport>,
    /// What one checkout cost (a `run` given --metrics or
    /// --stats-database-url).
    pub cost: Option<CostReport>,
}

/// The baseline and how the saga compares with it.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineComparison {
    #[serde(flatten)]
    pub baseline: BaselineReport,
    /// The saga's checkouts per second compared: the sustainable rate of a
    /// capacity search, or the throughput of a run.
    pub saga_rate: f64,
    /// `saga_rate / tps`.
    pub ratio: f64,
}

impl BaselineComparison {
    pub fn new(baseline: BaselineReport, saga_rate: f64) -> Self {
        let ratio = if baseline.tps > 0.0 {
            crate::stats::round3(saga_rate / baseline.tps)
        } else {
            0.0
        };
        Self {
            baseline,
            saga_rate,
            ratio,
        }
    }
}

/// The machine the numbers were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_gib: Option<f64>,
    pub os: Option<String>,
    pub kernel: Option<String>,
}

impl Machine {
    /// Reads it from `/proc` and `/etc/os-release`.
    pub fn detect() -> Self {
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let kib: f64 = text
                    .lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(crate::stats::round3(kib / 1024.0 / 1024.0))
            });
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                    .map(|name| name.trim_matches('"').to_owned())
            });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|k| k.trim().to_owned());
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
            os,
            kernel,
        }
    }

    /// One line: CPUs, memory, OS and kernel.
    pub fn describe(&self) -> String {
        format!(
            "{} CPUs, {} GiB, {} (kernel {})",
            self.cpus,
            self.memory_gib
                .map_or_else(|| "?".to_owned(), |g| format!("{g:.1}")),
            self.os.as_deref().unwrap_or("unknown OS"),
            self.kernel.as_deref().unwrap_or("?")
        )
    }
}

impl Report {
    /// The text table: what the run applied, what came out, and where the
    /// time went.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Shipshape load test: {} against {}",
            self.command, self.gateway
        );
        let _ = writeln!(
            out,
            "started {} on {}",
            self.started_at,
            self.machine.describe()
        );
        // In the order they ran: a capacity search, then the run (after a
        // search, at half the rate it found).
        if let Some(capacity) = &self.capacity {
            render_capacity(&mut out, capacity);
        }
        if let Some(run) = &self.run {
            if self.capacity.is_some() {
                let _ = write!(out, "\nat half the sustainable rate:");
            }
            render_run(&mut out, run);
        }
        if let Some(baseline) = &self.baseline {
            let b = &baseline.baseline;
            let _ = writeln!(
                out,
                "\nbaseline (one transaction per checkout, pgbench, {} clients, {:.0} s): {:.1} tx/s, \
                 {} transactions, {} failed\nsaga {:.1} checkouts/s = {:.1} % of the baseline \
                 (ratio {:.3})",
                b.clients,
                b.duration_secs,
                b.tps,
                b.transactions,
                b.failed_transactions,
                baseline.saga_rate,
                baseline.ratio * 100.0,
                baseline.ratio
            );
        }
        if !self.processes.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<42} {:>10} {:>10} {:>10} {:>9} {:>7}",
                "process (during the load)", "RSS max", "RSS mean", "anon max", "CPU s", "CPU %"
            );
            for p in &self.processes {
                let _ = writeln!(
                    out,
                    "{:<42} {:>6.1} MiB {:>6.1} MiB {:>6.1} MiB {:>9.1} {:>7.1}",
                    p.name,
                    p.rss_max_mib,
                    p.rss_mean_mib,
                    p.rss_anon_max_mib,
                    p.cpu_seconds,
                    p.cpu_percent
                );
            }
            let _ = writeln!(
                out,
                "(CPU % of one core, averaged over the load; a Postgres backend's RSS includes the \
                 shared buffers it touched, `anon` is its private memory)"
            );
        }
        if let Some(cost) = &self.cost {
            render_cost(&mut out, cost);
        }
        out
    }

    /// The chart: throughput and latency per second, over every run.
    pub fn render_svg(&self) -> String {
        // In the order they ran: a capacity search's steps, then the run
        // (at half the rate found, after a search).
        let mut runs: Vec<(&RunReport, Option<String>)> = Vec::new();
        if let Some(capacity) = &self.capacity {
            for step in &capacity.steps {
                runs.push((&step.run, Some(format!("{}/s", step.rate))));
            }
        }
        if let Some(run) = &self.run {
            let label = self.capacity.as_ref().map(|_| "half rate".to_owned());
            runs.push((run, label));
        }
        let mut timeline: Vec<(f64, &WindowReport)> = Vec::new();
        let mut markers = Vec::new();
        let mut offset = 0.0;
        for (run, label) in runs {
            if let Some(label) = label {
                markers.push(Marker { at: offset, label });
            }
            for window in &run.totals.timeline {
                timeline.push((offset + window.second as f64, window));
            }
            offset += (run.totals.timeline.len() as f64).max(run.load.duration_secs);
        }
        let series = |name: &str, color, value: fn(&WindowReport) -> Option<f64>| Series {
            name: name.to_owned(),
            color,
            points: timeline.iter().map(|(t, w)| (*t, value(w))).collect(),
        };
        let panels = [
            Panel {
                title: "Throughput".to_owned(),
                unit: "per second".to_owned(),
                series: vec![
                    series("arrivals", "#7f7f7f", |w| Some(w.arrivals as f64)),
                    series("orders terminal", "#1f77b4", |w| Some(w.terminal as f64)),
                    series("failed checkouts", "#d62728", |w| Some(w.failed as f64)),
                ],
            },
            Panel {
                title: "Latency".to_owned(),
                unit: "ms".to_owned(),
                series: vec![
                    series("saga p99", "#d62728", |w| w.saga_p99_ms),
                    series("saga p50", "#ff9896", |w| w.saga_p50_ms),
                    series("POST /orders p99", "#2ca02c", |w| w.place_p99_ms),
                    series("POST /orders p50", "#98df8a", |w| w.place_p50_ms),
                ],
            },
        ];
        chart::render(
            &format!(
                "Shipshape checkout: {} against {}",
                self.command, self.gateway
            ),
            &panels,
            &markers,
            offset,
        )
    }

    /// Writes `report.json`, `report.txt` and `report.svg` into `dir`
    /// (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
        };
        write("report.json", &serde_json::to_string_pretty(self)?)?;
        write("report.txt", &self.render_text())?;
        write("report.svg", &self.render_svg())?;
        Ok(())
    }
}

fn latency_row(out: &mut String, name: &str, requests: String, errors: String, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "{name:<36} {requests:>9} {errors:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        ms(l.p50_ms),
        ms(l.p90_ms),
        ms(l.p99_ms),
        ms(l.p999_ms),
        ms(l.max_ms)
    );
}

fn render_run(out: &mut String, run: &RunReport) {
    let t = &run.totals;
    let load = match (run.load.rate, run.load.users) {
        (Some(rate), _) => format!(
            "open model, {rate} checkouts/s for {:.0} s (ramp {:.0} s)",
            run.load.duration_secs, run.ramp_secs
        ),
        (None, Some(users)) => format!(
            "closed model, {users} users for {:.0} s",
            run.load.duration_secs
        ),
        (None, None) => "no load".to_owned(),
    };
    let _ = writeln!(
        out,
        "\n{load}; mix {}; popularity {}; poll every {} ms",
        run.mix, run.popularity, run.poll_interval_ms
    );
    let _ = writeln!(
        out,
        "checkouts: {} arrived, {} placed, {} terminal, {} not terminal, {} failed \
         (error rate {:.3} %); drained in {:.1} s",
        t.arrivals,
        t.placed,
        t.terminal,
        t.not_terminal,
        t.failed_checkouts,
        t.error_rate * 100.0,
        run.drain_secs
    );
    let _ = writeln!(
        out,
        "offered {:.2}/s, throughput {:.2} orders terminal/s; every placed order terminal: {}; \
         counts match: {}",
        t.offered_rate,
        t.throughput,
        if t.not_terminal == 0 && t.placed == t.terminal {
            "yes"
        } else {
            "NO"
        },
        if run.counts_match() { "yes" } else { "NO" }
    );
    let _ = writeln!(
        out,
        "\noutcomes (path: as expected / total; everything seen)"
    );
    for (path, o) in &t.outcomes {
        let seen: Vec<String> = o.seen.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "  {path:<20} {:>7} / {:<7} expected {}; seen {}",
            o.as_expected,
            o.total,
            o.expected,
            seen.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\n{:<36} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "requests", "errors", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, e) in &t.endpoints {
        latency_row(
            out,
            name,
            e.requests.to_string(),
            e.errors.to_string(),
            &e.latency,
        );
    }
    latency_row(
        out,
        "saga: placed -> terminal (order's own)",
        t.saga.count.to_string(),
        String::new(),
        &t.saga,
    );
    latency_row(
        out,
        "checkout: due -> terminal seen",
        t.checkout.count.to_string(),
        String::new(),
        &t.checkout,
    );
    latency_row(
        out,
        "generator start lag: started - due",
        t.start_lag.count.to_string(),
        String::new(),
        &t.start_lag,
    );
    if t.errors.is_empty() {
        let _ = writeln!(out, "errors by kind: none");
    } else {
        let kinds: Vec<String> = t.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "errors by kind: {}", kinds.join(", "));
        for (kind, examples) in &t.error_examples {
            for example in examples {
                let _ = writeln!(out, "  e.g. {kind}: {example}");
            }
        }
    }
    let s = &run.stock;
    let _ = writeln!(
        out,
        "stock: {} (target {} units per product): {} restocks, {} units added, {} failed checks",
        s.method, s.target, s.restocks, s.units_added, s.failures
    );
}

/// What one checkout cost: messages, calls and requests, then transactions
/// and rows written per database, then CPU per 1,000 checkouts per process.
fn render_cost(out: &mut String, cost: &CostReport) {
    let _ = writeln!(
        out,
        "\nwhat one checkout costs (over {} checkouts)",
        cost.checkouts
    );
    for (what, value) in &cost.per_checkout {
        let _ = writeln!(out, "  {what:<40} {value:>9.2}");
    }
    for (database, transactions) in &cost.transactions_per_checkout {
        let rows = cost
            .rows_written_per_checkout
            .get(database)
            .copied()
            .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "  {:<40} {transactions:>9.2} transactions, {rows:.2} rows written",
            format!("database {database}")
        );
    }
    let _ = writeln!(
        out,
        "  {:<40} {:>9.2} transactions (reads included)",
        "databases, all", cost.transactions_per_checkout_total
    );
    for (process, seconds) in &cost.cpu_seconds_per_1000 {
        let _ = writeln!(
            out,
            "  {:<40} {seconds:>9.2} CPU s per 1,000 checkouts",
            process
        );
    }
    let _ = writeln!(
        out,
        "  {:<40} {:>9.2} CPU s per 1,000 checkouts",
        "all but the generator", cost.system_cpu_seconds_per_1000
    );
}

fn render_capacity(out: &mut String, capacity: &CapacityReport) {
    let slo = &capacity.slo;
    let _ = writeln!(
        out,
        "\ncapacity search: SLO saga p99 <= {:.0} ms, error rate < {:.3} %, throughput >= {:.0} % \
         of the rate; {:.0} s per step, after {:.0} s of warm-up at the first step's rate",
        slo.saga_p99_ms,
        slo.max_error_rate * 100.0,
        slo.min_throughput_share * 100.0,
        capacity.step_secs,
        capacity.warmup_secs
    );
    let _ = writeln!(
        out,
        "{:>8} {:>11} {:>12} {:>14} {:>11} {:>8}  verdict",
        "rate/s", "throughput", "saga p99 ms", "POST p99 ms", "error %", "placed"
    );
    for step in &capacity.steps {
        let t = &step.run.totals;
        let post = t
            .endpoints
            .get("POST /api/v1/orders")
            .and_then(|e| e.latency.p99_ms);
        let _ = writeln!(
            out,
            "{:>8} {:>11.2} {:>12} {:>14} {:>11.3} {:>8}  {}",
            step.rate,
            t.throughput,
            ms(t.saga.p99_ms),
            ms(post),
            t.error_rate * 100.0,
            t.placed,
            match (&step.load, step.verdict.sustainable) {
                (None, true) => "held".to_owned(),
                (Some(load), true) => format!("held ({})", load.describe()),
                (None, false) => format!("broke: {}", step.verdict.reasons.join("; ")),
                (Some(load), false) => format!(
                    "broke: {} ({})",
                    step.verdict.reasons.join("; "),
                    load.describe()
                ),
            }
        );
    }
    let _ = writeln!(
        out,
        "highest sustainable rate: {}{}",
        capacity.sustainable_rate.map_or_else(
            || "none (the first step broke)".to_owned(),
            |r| format!("{r} checkouts/s")
        ),
        match capacity.first_broken_rate {
            Some(rate) => format!(" (broke at {rate}/s)"),
            None => " (no step broke: the limit is above the last rate tried)".to_owned(),
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(tps: f64) -> BaselineReport {
        BaselineReport {
            tps,
            transactions: 1000,
            failed_transactions: 0,
            latency_avg_ms: Some(9.0),
            clients: 8,
            duration_secs: 30.0,
            script: "loadtest/baseline/checkout.sql",
        }
    }

    #[test]
    fn the_saga_is_compared_with_the_baseline_as_a_ratio() {
        let comparison = BaselineComparison::new(baseline(800.0), 40.0);
        assert_eq!(comparison.ratio, 0.05);
        assert_eq!(BaselineComparison::new(baseline(0.0), 40.0).ratio, 0.0);
    }

    #[test]
    fn the_text_report_names_every_section_it_has() {
        let report = Report {
            tool: "test".to_owned(),
            started_at: "2025-01-31T09:30:00Z".to_owned(),
            command: "run".to_owned(),
            gateway: "http://127.0.0.1:8080".to_owned(),
            machine: Machine {
                cpus: 2,
                memory_gib: Some(23.5),
                os: Some("Debian GNU/Linux 12 (bookworm)".to_owned()),
                kernel: None,
            },
            run: None,
            capacity: None,
            baseline: Some(BaselineComparison::new(baseline(800.0), 40.0)),
            processes: vec![ProcessReport {
                name: "gateway".to_owned(),
                pids: vec![42],
                rss_max_mib: 9.5,
                rss_mean_mib: 9.0,
                rss_anon_max_mib: 3.0,
                cpu_seconds: 3.0,
                cpu_percent: 15.0,
                rss_mib_samples: vec![9.0, 9.5],
            }],
            cost: Some(CostReport {
                checkouts: 10,
                per_checkout: [("events produced".to_owned(), 6.5)].into(),
                transactions_per_checkout: [("order".to_owned(), 4.0)].into(),
                transactions_per_checkout_total: 4.0,
                rows_written_per_checkout: [("order".to_owned(), 9.0)].into(),
                cpu_seconds_per_1000: [("gateway".to_owned(), 12.5)].into(),
                system_cpu_seconds_per_1000: 12.5,
            }),
        };
        let text = report.render_text();
        assert!(
            text.contains("2 CPUs, 23.5 GiB, Debian GNU/Linux 12 (bookworm)"),
            "{text}"
        );
        assert!(text.contains("800.0 tx/s"), "{text}");
        assert!(text.contains("= 5.0 % of the baseline"), "{text}");
        assert!(text.contains("gateway"), "{text}");
        assert!(
            text.contains("what one checkout costs (over 10 checkouts)"),
            "{text}"
        );
        assert!(
            text.contains("4.00 transactions, 9.00 rows written"),
            "{text}"
        );
        assert!(text.contains("12.50 CPU s per 1,000 checkouts"), "{text}");
        assert!(report.render_svg().contains("</svg>"));
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["baseline"]["ratio"], 0.05);
        assert_eq!(json["baseline"]["tps"], 800.0);
        assert_eq!(json["processes"][0]["rss_max_mib"], 9.5);
    }
}
