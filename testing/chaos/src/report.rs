//! What a chaos run reports: the orders and their outcomes, each fault with
//! when it began and ended, restarts nobody planned, how long the system took
//! to go quiet after the last fault, every invariant violation, and the load
//! test's own latency report.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use shipshape_invariants::{Report as InvariantReport, Violation};
use shipshape_loadtest::report::{Machine, Report as LoadReport};
use shipshape_loadtest::run::RunReport;
use shipshape_loadtest::stats::{LatencySummary, ms};

/// Everything one run found.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    pub schedule: String,
    pub started_at: String,
    pub machine: Machine,
    /// The kinds of fault the schedule applies.
    pub kinds: Vec<&'static str>,
    pub faults: Vec<AppliedFault>,
    pub unplanned_restarts: Vec<UnplannedRestart>,
    /// What failed while bringing everything back after the faults (a
    /// process not ready again, the broker not starting).
    pub recovery_errors: Vec<String>,
    pub convergence: Convergence,
    pub invariants: InvariantReport,
    pub load: RunReport,
    /// The stack did not stop cleanly afterwards (a process had to be
    /// killed, say): worth reading, not a violation.
    pub stop_problems: Option<String>,
}

/// A fault as it happened. Times count from the start of the load.
#[derive(Clone, Debug, Serialize)]
pub struct AppliedFault {
    /// Its number in the schedule, from 1.
    pub fault: usize,
    pub kind: &'static str,
    pub description: String,
    pub planned_at_secs: f64,
    pub began_at_secs: f64,
    /// When it was undone (the process restarted, the link healed); the
    /// start itself for an instantaneous fault; `None` if never.
    pub ended_at_secs: Option<f64>,
    /// What applying it showed (an exit status, sessions ended).
    pub detail: Option<String>,
    /// Applying or undoing it failed.
    pub errors: Vec<String>,
}

/// A process that exited although the schedule had not stopped it, and
/// was started again by the runner.
#[derive(Clone, Debug, Serialize)]
pub struct UnplannedRestart {
    pub service: String,
    pub at_secs: f64,
    pub exit_status: String,
    pub restart_error: Option<String>,
}

/// How the system settled after the faults.
#[derive(Clone, Debug, Serialize)]
pub struct Convergence {
    /// When the last fault was undone.
    pub faults_over_at_secs: f64,
    /// When the last checkout ended (the load goes on after the last
    /// fault, so the system cannot be quiet before this).
    pub load_over_at_secs: f64,
    /// When every order was terminal, every outbox empty, every consumer
    /// caught up and no payment waited for the PSP; `None` if that did not
    /// happen within the schedule's convergence timeout.
    pub quiet_at_secs: Option<f64>,
    pub after_last_fault_secs: Option<f64>,
    /// From the end of the load until quiet.
    pub after_load_secs: Option<f64>,
    /// What was still in flight at the timeout.
    pub still_busy: Vec<Violation>,
    /// A source (a database, the broker) that could still not be read at
    /// the timeout.
    pub unreadable: Option<String>,
}

impl Convergence {
    /// Not quiet (yet): the faults ended at `faults_over_at_secs` and the
    /// load at `load_over_at_secs`.
    pub fn not_yet(faults_over_at_secs: f64, load_over_at_secs: f64) -> Self {
        Self {
            faults_over_at_secs,
            load_over_at_secs,
            quiet_at_secs: None,
            after_last_fault_secs: None,
            after_load_secs: None,
            still_busy: Vec::new(),
            unreadable: None,
        }
    }
}

impl ChaosReport {
    /// The run proves the claim: orders were placed, every fault applied
    /// and undone as planned, every process back and ready, the system
    /// quiet in time, and no invariant violated.
    pub fn passed(&self) -> bool {
        self.orders_placed() > 0
            && self.faults.iter().all(|fault| fault.errors.is_empty())
            && self
                .unplanned_restarts
                .iter()
                .all(|restart| restart.restart_error.is_none())
            && self.recovery_errors.is_empty()
            && self.convergence.quiet_at_secs.is_some()
            && self.invariants.is_clean()
    }

    /// Orders the gateway accepted, by the load test's count.
    pub fn orders_placed(&self) -> u64 {
        self.load.totals.placed
    }

    /// The report as text.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Shipshape chaos run `{}`, started {}",
            self.schedule, self.started_at
        );
        let _ = writeln!(out, "machine: {}", self.machine.describe());
        let t = &self.load.totals;
        let _ = writeln!(
            out,
            "\nload: {} checkouts/s for {:.0} s: {} arrived, {} orders placed, {} seen terminal, \
             {} not terminal at the client's timeout, {} checkouts with an error",
            self.load.load.rate.unwrap_or_default(),
            self.load.load.duration_secs,
            t.arrivals,
            t.placed,
            t.terminal,
            t.not_terminal,
            t.failed_checkouts
        );
        for (kind, count) in &t.errors {
            let _ = writeln!(out, "  client error {kind}: {count}");
        }
        let _ = writeln!(out, "\noutcomes (from the order database):");
        for (status, count) in &self.invariants.orders {
            let _ = writeln!(out, "  {status:<40} {count:>7}");
        }

        let _ = writeln!(
            out,
            "\nfaults ({} applied; kinds: {}):",
            self.faults.len(),
            self.kinds.join(", ")
        );
        for fault in &self.faults {
            let ended = fault
                .ended_at_secs
                .map_or_else(|| "never undone".to_owned(), |e| format!("{e:>7.1} s"));
            let _ = writeln!(
                out,
                "  #{:<3} {:>7.1} s → {ended}  {}{}",
                fault.fault,
                fault.began_at_secs,
                fault.description,
                fault
                    .detail
                    .as_ref()
                    .map_or(String::new(), |d| format!(" ({d})"))
            );
            for error in &fault.errors {
                let _ = writeln!(out, "        FAILED: {error}");
            }
        }
        if self.unplanned_restarts.is_empty() {
            let _ = writeln!(out, "no process exited unless the schedule stopped it");
        }
        for restart in &self.unplanned_restarts {
            let _ = writeln!(
                out,
                "  {:>7.1} s  {} was down unplanned ({}) and the supervisor restarted it{}",
                restart.at_secs,
                restart.service,
                restart.exit_status,
                restart
                    .restart_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(", which failed: {e}"))
            );
        }

        for error in &self.recovery_errors {
            let _ = writeln!(out, "  RECOVERY FAILED: {error}");
        }

        let c = &self.convergence;
        match (c.quiet_at_secs, c.after_last_fault_secs, c.after_load_secs) {
            (Some(quiet), Some(after_fault), Some(after_load)) => {
                let _ = writeln!(
                    out,
                    "\nconverged: quiet at {quiet:.1} s: {after_fault:.1} s after the last fault \
                     ended ({:.1} s), {after_load:.1} s after the last checkout ended ({:.1} s)",
                    c.faults_over_at_secs, c.load_over_at_secs
                );
            }
            _ => {
                if let Some(unreadable) = &c.unreadable {
                    let _ = writeln!(out, "\nNOT converged: cannot read the system: {unreadable}");
                }
                let _ = writeln!(
                    out,
                    "\nNOT converged within the timeout; still in flight ({}):",
                    c.still_busy.len()
                );
                for busy in c.still_busy.iter().take(50) {
                    let _ = writeln!(out, "  {busy}");
                }
            }
        }

        let _ = writeln!(out, "\ninvariants: {}", self.invariants);
        let _ = writeln!(out, "latency under faults (ms):");
        let _ = writeln!(
            out,
            "  {:<28} {:>9} {:>9} {:>9} {:>9}",
            "", "p50", "p99", "p99.9", "max"
        );
        latency_row(&mut out, "saga (placed → terminal)", &t.saga);
        latency_row(&mut out, "checkout (due → seen terminal)", &t.checkout);
        for (endpoint, summary) in &t.endpoints {
            latency_row(&mut out, endpoint, &summary.latency);
        }
        if let Some(problems) = &self.stop_problems {
            let _ = writeln!(out, "\nthe stack did not stop cleanly: {problems}");
        }
        let _ = writeln!(
            out,
            "\nresult: {}",
            if self.passed() { "PASSED" } else { "FAILED" }
        );
        out
    }

    /// Writes `report.txt` and `report.json` into `dir`, and the load
    /// test's own report (text, JSON, SVG chart) into `dir/load/`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
        };
        write("report.json", &serde_json::to_string_pretty(self)?)?;
        write("report.txt", &self.render_text())?;
        LoadReport {
            tool: "shipshape-chaos".to_owned(),
            started_at: self.started_at.clone(),
            command: format!("chaos {}", self.schedule),
            gateway: "the chaos run's own stack".to_owned(),
            machine: self.machine.clone(),
            run: Some(self.load.clone()),
            capacity: None,
            baseline: None,
            processes: Vec::new(),
            cost: None,
        }
        .write(&dir.join("load"))
    }
}

fn latency_row(out: &mut String, name: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {name:<28} {:>9} {:>9} {:>9} {:>9}",
        ms(l.p50_ms),
        ms(l.p99_ms),
        ms(l.p999_ms),
        ms(l.max_ms)
    );
}
