//! When each checkout of an open-model run is meant to start.
//!
//! The arrival rate is piecewise linear in time (a ramp, then a plateau).
//! Arrival `i` is due when the expected number of arrivals so far, the
//! integral of the rate, reaches `i`: at a constant rate `r` that is `i / r`.
//! The times depend on nothing but the schedule, so a slow system cannot
//! slow the generator down: each checkout starts when it is due whether or
//! not earlier ones have finished, and its latency is measured from when it
//! was due (no coordinated omission).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// An arrival rate in checkouts per second: finite and positive.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Rate(f64);

impl Rate {
    pub fn new(per_second: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            per_second.is_finite() && per_second > 0.0,
            "a rate must be a positive number of checkouts per second, not {per_second}"
        );
        Ok(Self(per_second))
    }

    pub fn per_second(self) -> f64 {
        self.0
    }
}

impl FromStr for Rate {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value: f64 = s
            .parse()
            .map_err(|_| anyhow::anyhow!("`{s}` is not a rate (checkouts per second)"))?;
        Self::new(value)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole rates print without decimals, others with up to two.
        if self.0.fract() == 0.0 {
            write!(f, "{:.0}/s", self.0)
        } else {
            write!(f, "{:.2}/s", self.0)
        }
    }
}

/// The rate going linearly from `from` to `to` (checkouts per second) over
/// `length`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Phase {
    from: f64,
    to: f64,
    length: Duration,
}

impl Phase {
    /// Expected arrivals during the phase: the area under the rate.
    fn arrivals(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.length.as_secs_f64()
    }

    /// When, from the phase's start, `n` arrivals are expected: the root of
    /// `from·t + k·t² = n` with `k = (to - from) / 2·length`, written as
    /// `2n / (from + √(from² + 4kn))` so it stays exact when `k` is zero.
    fn time_of(&self, n: f64) -> f64 {
        let k = (self.to - self.from) / (2.0 * self.length.as_secs_f64());
        let denominator = self.from + (self.from * self.from + 4.0 * k * n).max(0.0).sqrt();
        if denominator <= 0.0 {
            0.0
        } else {
            2.0 * n / denominator
        }
    }
}

/// The arrival rate over a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    phases: Vec<Phase>,
}

impl Schedule {
    /// `rate` for `duration`.
    pub fn constant(rate: Rate, duration: Duration) -> Self {
        Self::ramped(rate, Duration::ZERO, duration)
    }

    /// From zero up to `rate` over `ramp`, then `rate` until `duration` (the
    /// whole run, ramp included) is over.
    pub fn ramped(rate: Rate, ramp: Duration, duration: Duration) -> Self {
        let ramp = ramp.min(duration);
        let mut phases = Vec::new();
        if !ramp.is_zero() {
            phases.push(Phase {
                from: 0.0,
                to: rate.0,
                length: ramp,
            });
        }
        if duration > ramp {
            phases.push(Phase {
                from: rate.0,
                to: rate.0,
                length: duration - ramp,
            });
        }
        Self { phases }
    }

    /// How long arrivals go on.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|phase| phase.length).sum()
    }

    /// The rate at the plateau (the highest one).
    pub fn peak(&self) -> f64 {
        self.phases
            .iter()
            .map(|phase| phase.from.max(phase.to))
            .fold(0.0, f64::max)
    }

    /// The rate `at` into the run (0 after it).
    pub fn rate_at(&self, at: Duration) -> f64 {
        let mut start = Duration::ZERO;
        for phase in &self.phases {
            if at < start + phase.length {
                let into = (at - start).as_secs_f64() / phase.length.as_secs_f64();
                return phase.from + (phase.to - phase.from) * into;
            }
            start += phase.length;
        }
        0.0
    }

    /// Expected arrivals over the whole run.
    pub fn expected_arrivals(&self) -> f64 {
        self.phases.iter().map(Phase::arrivals).sum()
    }

    /// The due time of every arrival, from the run's start, in order.
    pub fn arrivals(&self) -> Arrivals<'_> {
        Arrivals {
            phases: &self.phases,
            phase: 0,
            phase_start: 0.0,
            arrivals_before: 0.0,
            next: 0,
        }
    }
}

/// The iterator of [`Schedule::arrivals`].
#[derive(Debug)]
pub struct Arrivals<'a> {
    phases: &'a [Phase],
    phase: usize,
    /// Seconds from the run's start to the current phase's start.
    phase_start: f64,
    /// Expected arrivals before the current phase.
    arrivals_before: f64,
    /// The index of the next arrival.
    next: u64,
}

impl Iterator for Arrivals<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let target = self.next as f64;
        loop {
            let phase = self.phases.get(self.phase)?;
            let in_phase = phase.arrivals();
            if target < self.arrivals_before + in_phase {
                let at = self.phase_start + phase.time_of(target - self.arrivals_before);
                self.next += 1;
                return Some(Duration::from_secs_f64(at));
            }
            self.arrivals_before += in_phase;
            self.phase_start += phase.length.as_secs_f64();
            self.phase += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(r: f64) -> Rate {
        Rate::new(r).expect("valid rate")
    }

    fn secs(times: &[Duration]) -> Vec<f64> {
        times
            .iter()
            .map(|t| (t.as_secs_f64() * 1e6).round() / 1e6)
            .collect()
    }

    #[test]
    fn a_constant_rate_is_evenly_spaced_from_zero() {
        let schedule = Schedule::constant(rate(10.0), Duration::from_secs(1));
        let times: Vec<Duration> = schedule.arrivals().collect();
        assert_eq!(
            secs(&times),
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        );
        assert_eq!(schedule.expected_arrivals(), 10.0);
        assert_eq!(schedule.duration(), Duration::from_secs(1));
    }

    #[test]
    fn a_fractional_rate_keeps_its_average() {
        let schedule = Schedule::constant(rate(2.5), Duration::from_secs(60));
        let times: Vec<Duration> = schedule.arrivals().collect();
        assert_eq!(times.len(), 150);
        assert!(times.last().expect("arrivals") < &Duration::from_secs(60));
        assert_eq!(secs(&times[..3]), [0.0, 0.4, 0.8]);
    }

    #[test]
    fn a_ramp_integrates_the_rate() {
        // 0 -> 10/s over 2 s (10 arrivals expected), then 10/s for 2 s (20).
        let schedule = Schedule::ramped(rate(10.0), Duration::from_secs(2), Duration::from_secs(4));
        let times: Vec<Duration> = schedule.arrivals().collect();
        assert_eq!(times.len(), 30);
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        // During the ramp, n arrivals are expected by t = sqrt(2·n·2/10).
        for (n, t) in times.iter().enumerate().take(10) {
            let expected = (0.4 * n as f64).sqrt();
            assert!((t.as_secs_f64() - expected).abs() < 1e-9, "{n}: {t:?}");
        }
        // 2.5 arrivals are expected in the first second: arrivals 0, 1, 2.
        assert_eq!(times.iter().filter(|t| t.as_secs_f64() < 1.0).count(), 3);
        // After the ramp, one every 100 ms, starting exactly at 2 s.
        assert_eq!(secs(&times[10..13]), [2.0, 2.1, 2.2]);
        assert_eq!(schedule.rate_at(Duration::from_secs(1)), 5.0);
        assert_eq!(schedule.rate_at(Duration::from_secs(3)), 10.0);
        assert_eq!(schedule.rate_at(Duration::from_secs(5)), 0.0);
        assert_eq!(schedule.peak(), 10.0);
    }

    #[test]
    fn the_arrivals_in_any_second_match_the_rate() {
        let schedule =
            Schedule::ramped(rate(40.0), Duration::from_secs(10), Duration::from_secs(30));
        let times: Vec<Duration> = schedule.arrivals().collect();
        for second in 0..30u64 {
            let counted = times.iter().filter(|t| t.as_secs() == second).count() as f64;
            let from = Duration::from_secs(second);
            let to = Duration::from_secs(second + 1);
            let expected =
                (schedule.rate_at(from) + schedule.rate_at(to - Duration::from_nanos(1))) / 2.0;
            assert!(
                (counted - expected).abs() <= 1.0,
                "second {second}: {counted} vs {expected}"
            );
        }
        assert_eq!(times.len() as f64, schedule.expected_arrivals());
    }

    #[test]
    fn a_ramp_as_long_as_the_run_never_plateaus() {
        let schedule = Schedule::ramped(rate(10.0), Duration::from_secs(9), Duration::from_secs(4));
        assert_eq!(schedule.duration(), Duration::from_secs(4));
        assert_eq!(schedule.arrivals().count(), 20);
    }

    #[test]
    fn rates_must_be_positive_and_finite() {
        assert!("0".parse::<Rate>().is_err());
        assert!("-3".parse::<Rate>().is_err());
        assert!("inf".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        assert_eq!("12.5".parse::<Rate>().expect("rate").per_second(), 12.5);
        assert_eq!(rate(50.0).to_string(), "50/s");
        assert_eq!(rate(12.5).to_string(), "12.50/s");
    }
}
