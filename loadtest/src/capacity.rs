//! The capacity finder: steps the arrival rate up until the service level
//! objective breaks, then narrows the gap between the last rate that held
//! and the first that did not, and reports the highest sustainable rate.
//!
//! The search ([`Search`]) is plain logic over verdicts, tested with
//! synthetic systems; [`find`] runs one open-model step per rate it asks
//! for.

use std::time::Duration;

use serde::Serialize;

use crate::procstat::{ProcessReport, Sampler, THIS_PROCESS, Watch};
use crate::recorder::Endpoint;
use crate::run::{Load, RunOptions, RunReport, run};
use crate::schedule::{Rate, Schedule};
use crate::stats::round3;

/// What "sustainable" means.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Slo {
    /// p99 of placed → terminal, by the orders' own timestamps. The same
    /// bound applies to `POST /api/v1/orders` (from when the checkout was
    /// due): time spent queueing before the order exists is not in the
    /// order's timestamps, and must not hide there.
    pub saga_p99_ms: f64,
    /// Failed checkouts per arrival must stay below this.
    pub max_error_rate: f64,
    /// Terminal orders per second must reach this share of the offered
    /// rate: a system that falls behind is not sustaining the rate even if
    /// the orders it finishes are fast.
    pub min_throughput_share: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            saga_p99_ms: 250.0,
            max_error_rate: 0.001,
            min_throughput_share: 0.95,
        }
    }
}

/// Whether one step met the objective, and if not, why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub sustainable: bool,
    pub reasons: Vec<String>,
}

/// Judges a step run at `rate` against `slo`.
pub fn judge(
    slo: &Slo,
    rate: f64,
    saga_p99_ms: Option<f64>,
    place_p99_ms: Option<f64>,
    error_rate: f64,
    throughput: f64,
) -> Verdict {
    let mut reasons = Vec::new();
    match saga_p99_ms {
        Some(p99) if p99 > slo.saga_p99_ms => {
            reasons.push(format!("saga p99 {p99:.1} ms > {:.0} ms", slo.saga_p99_ms))
        }
        Some(_) => {}
        None => reasons.push("no order became terminal".to_owned()),
    }
    if let Some(p99) = place_p99_ms.filter(|p99| *p99 > slo.saga_p99_ms) {
        reasons.push(format!(
            "POST /api/v1/orders p99 {p99:.1} ms > {:.0} ms",
            slo.saga_p99_ms
        ));
    }
    if error_rate >= slo.max_error_rate {
        reasons.push(format!(
            "error rate {:.3} % >= {:.3} %",
            error_rate * 100.0,
            slo.max_error_rate * 100.0
        ));
    }
    if throughput < rate * slo.min_throughput_share {
        reasons.push(format!(
            "throughput {throughput:.1}/s < {:.0} % of {rate:.1}/s",
            slo.min_throughput_share * 100.0
        ));
    }
    Verdict {
        sustainable: reasons.is_empty(),
        reasons,
    }
}

/// How the rate is stepped.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Steps {
    pub start: f64,
    pub step: f64,
    pub max: f64,
    /// Bisections between the last rate that held and the first that broke.
    pub refine: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Trying `start + k·step`.
    Stepping {
        next: f64,
    },
    /// Bisecting `(held, broke)` with `left` bisections to go.
    Refining {
        held: f64,
        broke: f64,
        left: u32,
    },
    Done,
}

/// The search's state: which rate to try next, given the verdicts so far.
#[derive(Clone, Debug)]
pub struct Search {
    steps: Steps,
    phase: Phase,
    highest_held: Option<f64>,
    lowest_broke: Option<f64>,
}

/// Bisection stops when the bracket is narrower than this many checkouts
/// per second: finer than the noise of a step.
const RESOLUTION: f64 = 0.5;

impl Search {
    pub fn new(steps: Steps) -> Self {
        Self {
            steps,
            phase: Phase::Stepping { next: steps.start },
            highest_held: None,
            lowest_broke: None,
        }
    }

    /// The next rate to try, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        match self.phase {
            Phase::Stepping { next } => Some(next),
            Phase::Refining { held, broke, .. } => Some(round_half((held + broke) / 2.0)),
            Phase::Done => None,
        }
    }

    /// Records whether `rate` (the one [`Search::next_rate`] gave) held.
    pub fn record(&mut self, rate: f64, held: bool) {
        if held {
            self.highest_held = Some(self.highest_held.map_or(rate, |h| h.max(rate)));
        } else {
            self.lowest_broke = Some(self.lowest_broke.map_or(rate, |b| b.min(rate)));
        }
        self.phase = match self.phase {
            Phase::Stepping { next } if held => {
                let next = next + self.steps.step;
                if next <= self.steps.max + 1e-9 {
                    Phase::Stepping { next }
                } else {
                    Phase::Done
                }
            }
            Phase::Stepping { .. } => match self.highest_held {
                Some(held) if self.steps.refine > 0 => self.refining(held, rate, self.steps.refine),
                _ => Phase::Done,
            },
            Phase::Refining {
                held: h,
                broke: b,
                left,
            } => {
                let (h, b) = if held { (rate, b) } else { (h, rate) };
                self.refining(h, b, left - 1)
            }
            Phase::Done => Phase::Done,
        };
    }

    fn refining(&self, held: f64, broke: f64, left: u32) -> Phase {
        let mid = round_half((held + broke) / 2.0);
        if left == 0 || broke - held < 2.0 * RESOLUTION || mid <= held || mid >= broke {
            Phase::Done
        } else {
            Phase::Refining { held, broke, left }
        }
    }

    /// The highest rate that held, if any did.
    pub fn sustainable(&self) -> Option<f64> {
        self.highest_held
    }

    /// The lowest rate that broke, if any did (none: the limit lies above
    /// `max`).
    pub fn first_broken(&self) -> Option<f64> {
        self.lowest_broke
    }
}

fn round_half(rate: f64) -> f64 {
    (rate * 2.0).round() / 2.0
}

/// One step of the search.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub rate: f64,
    pub verdict: Verdict,
    /// Where the CPU went during the step, when processes were watched.
    pub load: Option<StepLoad>,
    pub run: RunReport,
}

/// The busiest process of a step, and the whole system's CPU use.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepLoad {
    pub busiest: String,
    /// Its mean CPU use over the step, 100 = one core.
    pub busiest_cpu_percent: f64,
    /// Every watched process but the load generator, 100 = one core.
    pub system_cpu_percent: f64,
}

impl StepLoad {
    /// From the processes watched over a step; `None` when none was.
    pub fn of(processes: &[ProcessReport]) -> Option<Self> {
        let system: Vec<&ProcessReport> = processes
            .iter()
            .filter(|p| p.name != THIS_PROCESS)
            .collect();
        let busiest = system
            .iter()
            .max_by(|a, b| a.cpu_percent.total_cmp(&b.cpu_percent))?;
        Some(Self {
            busiest: busiest.name.clone(),
            busiest_cpu_percent: busiest.cpu_percent,
            system_cpu_percent: round3(system.iter().map(|p| p.cpu_percent).sum()),
        })
    }

    /// `busiest broker at 95 % of a core, all at 180 %`.
    pub fn describe(&self) -> String {
        format!(
            "busiest {} at {:.0} % of a core, all at {:.0} %",
            self.busiest, self.busiest_cpu_percent, self.system_cpu_percent
        )
    }
}

/// The search's result.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    pub slo: Slo,
    pub steps_config: Steps,
    pub step_secs: f64,
    /// Seconds run at the first step's rate before the search, not judged.
    pub warmup_secs: f64,
    /// The highest rate that met the objective; `null` if even the first
    /// did not.
    pub sustainable_rate: Option<f64>,
    /// The lowest rate that broke it; `null` if none up to `max` did.
    pub first_broken_rate: Option<f64>,
    pub steps: Vec<StepReport>,
}

/// Runs the search: `warmup` at the first step's rate, not judged, then
/// each step an open-model run of `step_duration` at one rate (with
/// `template`'s other settings), followed by a short pause so the next step
/// starts from a quiet system.
///
/// The warm-up is there because a stack just started is not yet the system
/// being measured: its consumers' first fetches, its pools' first
/// connections and its broker's JIT make the first seconds' sagas take
/// hundreds of milliseconds, which would break the first step at any rate.
pub async fn find(
    template: &RunOptions,
    steps: Steps,
    step_duration: Duration,
    warmup: Duration,
    slo: Slo,
    watch: &Watch,
) -> anyhow::Result<CapacityReport> {
    if !warmup.is_zero() {
        eprintln!(
            "capacity: warming up at {}/s for {} s (not judged)",
            steps.start,
            warmup.as_secs()
        );
        run(&at_rate(template, steps.start, warmup)?).await?;
        tokio::time::sleep(PAUSE_BETWEEN_STEPS).await;
    }
    let mut search = Search::new(steps);
    let mut reports = Vec::new();
    while let Some(rate) = search.next_rate() {
        eprintln!(
            "capacity: trying {rate}/s for {} s",
            step_duration.as_secs()
        );
        let options = at_rate(template, rate, step_duration)?;
        let sampler = (!watch.is_empty()).then(|| Sampler::start(watch.clone()));
        let report = run(&options).await?;
        let load = match sampler {
            Some(sampler) => StepLoad::of(&sampler.finish().await),
            None => None,
        };
        let place_p99_ms = report
            .totals
            .endpoints
            .get(Endpoint::PlaceOrder.name())
            .and_then(|place| place.latency.p99_ms);
        let verdict = judge(
            &slo,
            rate,
            report.totals.saga.p99_ms,
            place_p99_ms,
            report.totals.error_rate,
            report.totals.throughput,
        );
        eprintln!(
            "capacity: {rate}/s {} (throughput {:.1}/s, saga p99 {} ms, error rate {:.3} %){}",
            if verdict.sustainable { "held" } else { "broke" },
            report.totals.throughput,
            crate::stats::ms(report.totals.saga.p99_ms),
            report.totals.error_rate * 100.0,
            if verdict.reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", verdict.reasons.join("; "))
            }
        );
        if let Some(load) = &load {
            eprintln!("capacity: {}", load.describe());
        }
        search.record(rate, verdict.sustainable);
        reports.push(StepReport {
            rate,
            verdict,
            load,
            run: report,
        });
        if search.next_rate().is_some() {
            tokio::time::sleep(PAUSE_BETWEEN_STEPS).await;
        }
    }
    Ok(CapacityReport {
        slo,
        steps_config: steps,
        step_secs: step_duration.as_secs_f64(),
        warmup_secs: warmup.as_secs_f64(),
        sustainable_rate: search.sustainable(),
        first_broken_rate: search.first_broken(),
        steps: reports,
    })
}

/// `template` as an open-model run of `duration` at `rate`, without a ramp.
fn at_rate(template: &RunOptions, rate: f64, duration: Duration) -> anyhow::Result<RunOptions> {
    let mut options = template.clone();
    options.load = Load::Open(Schedule::constant(Rate::new(rate)?, duration));
    options.ramp = Duration::ZERO;
    Ok(options)
}

/// Lets queues left by a step that broke drain before the next one.
const PAUSE_BETWEEN_STEPS: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_names_its_busiest_process_but_never_the_generator() {
        let processes: Vec<ProcessReport> =
            [("broker", 95.0), ("order", 40.2), (THIS_PROCESS, 120.0)]
                .map(|(name, cpu_percent)| ProcessReport {
                    name: name.to_owned(),
                    pids: vec![1],
                    rss_max_mib: 0.0,
                    rss_mean_mib: 0.0,
                    rss_anon_max_mib: 0.0,
                    cpu_seconds: 0.0,
                    cpu_percent,
                    rss_mib_samples: Vec::new(),
                })
                .to_vec();
        let load = StepLoad::of(&processes).expect("processes were watched");
        assert_eq!(load.busiest, "broker");
        assert_eq!(load.system_cpu_percent, 135.2);
        assert_eq!(
            load.describe(),
            "busiest broker at 95 % of a core, all at 135 %"
        );
        assert_eq!(StepLoad::of(&processes[2..]), None);
    }

    /// Runs the search against a system that holds up to `limit`.
    fn search(steps: Steps, limit: f64) -> (Vec<f64>, Option<f64>, Option<f64>) {
        let mut search = Search::new(steps);
        let mut tried = Vec::new();
        while let Some(rate) = search.next_rate() {
            assert!(tried.len() < 100, "the search does not end: {tried:?}");
            tried.push(rate);
            search.record(rate, rate <= limit);
        }
        (tried, search.sustainable(), search.first_broken())
    }

    fn steps(start: f64, step: f64, max: f64, refine: u32) -> Steps {
        Steps {
            start,
            step,
            max,
            refine,
        }
    }

    #[test]
    fn steps_up_until_the_slo_breaks() {
        let (tried, held, broke) = search(steps(10.0, 10.0, 200.0, 0), 47.0);
        assert_eq!(tried, [10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!((held, broke), (Some(40.0), Some(50.0)));
    }

    #[test]
    fn refining_bisects_between_the_last_hold_and_the_first_break() {
        let (tried, held, broke) = search(steps(10.0, 10.0, 200.0, 3), 47.0);
        // 45 holds, 47.5 breaks, 46.5 holds (rates are in half steps).
        assert_eq!(tried, [10.0, 20.0, 30.0, 40.0, 50.0, 45.0, 47.5, 46.5]);
        assert_eq!((held, broke), (Some(46.5), Some(47.5)));
    }

    #[test]
    fn refining_stops_at_the_resolution() {
        let (tried, held, _) = search(steps(10.0, 1.0, 200.0, 10), 12.2);
        assert_eq!(tried, [10.0, 11.0, 12.0, 13.0, 12.5]);
        assert_eq!(held, Some(12.0));
    }

    #[test]
    fn a_first_step_that_breaks_means_nothing_is_sustainable() {
        let (tried, held, broke) = search(steps(10.0, 10.0, 200.0, 3), 5.0);
        assert_eq!(tried, [10.0]);
        assert_eq!((held, broke), (None, Some(10.0)));
    }

    #[test]
    fn a_system_faster_than_max_is_reported_as_max() {
        let (tried, held, broke) = search(steps(10.0, 10.0, 30.0, 3), 1000.0);
        assert_eq!(tried, [10.0, 20.0, 30.0]);
        assert_eq!((held, broke), (Some(30.0), None));
    }

    #[test]
    fn a_step_is_judged_on_latency_errors_and_throughput() {
        let slo = Slo::default();
        let ok = judge(&slo, 50.0, Some(120.0), None, 0.0, 49.8);
        assert!(ok.sustainable, "{ok:?}");

        let slow = judge(&slo, 50.0, Some(251.0), None, 0.0, 50.0);
        assert!(!slow.sustainable);
        assert!(
            slow.reasons[0].contains("saga p99 251.0 ms > 250 ms"),
            "{slow:?}"
        );

        let failing = judge(&slo, 50.0, Some(100.0), None, 0.001, 50.0);
        assert!(!failing.sustainable);
        assert!(
            failing.reasons[0].contains("error rate 0.100 %"),
            "{failing:?}"
        );
        assert!(judge(&slo, 50.0, Some(100.0), None, 0.000_99, 50.0).sustainable);

        let behind = judge(&slo, 50.0, Some(100.0), None, 0.0, 47.0);
        assert!(!behind.sustainable);
        assert!(
            behind.reasons[0].contains("throughput 47.0/s"),
            "{behind:?}"
        );

        let queued = judge(&slo, 50.0, Some(100.0), Some(900.0), 0.0, 50.0);
        assert!(!queued.sustainable);
        assert!(
            queued.reasons[0].contains("POST /api/v1/orders p99 900.0 ms > 250 ms"),
            "{queued:?}"
        );

        let nothing = judge(&slo, 50.0, None, None, 1.0, 0.0);
        assert_eq!(nothing.reasons.len(), 3, "{nothing:?}");
    }
}
