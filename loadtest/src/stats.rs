//! Latency statistics: an HDR histogram for whole runs, exact nearest-rank
//! percentiles for the small per-second windows of the timeline.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded as itself: one hour. Anything slower is
/// recorded as one hour (and the report's `max` says so).
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies in microseconds, with three significant digits: every
/// percentile is within 0.1 % of the true value, in a fixed few hundred
/// kilobytes however many samples are recorded.
#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("the bounds and precision are valid constants"),
        }
    }
}

impl Latency {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        // Zero is below the histogram's lowest value; a latency that rounds
        // to 0 µs counts as 1 µs.
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The `p`-th percentile (`p` in 0..=100), or `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        (self.count() > 0).then(|| {
            Duration::from_micros(
                self.histogram
                    .value_at_quantile((p / 100.0).clamp(0.0, 1.0)),
            )
        })
    }

    pub fn max(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_micros(self.histogram.max()))
    }

    pub fn mean(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_secs_f64(self.histogram.mean() / 1e6))
    }

    /// What reports show.
    pub fn summary(&self) -> LatencySummary {
        let ms = |d: Option<Duration>| d.map(|d| round3(d.as_secs_f64() * 1000.0));
        LatencySummary {
            count: self.count(),
            mean_ms: ms(self.mean()),
            p50_ms: ms(self.percentile(50.0)),
            p90_ms: ms(self.percentile(90.0)),
            p99_ms: ms(self.percentile(99.0)),
            p999_ms: ms(self.percentile(99.9)),
            max_ms: ms(self.max()),
        }
    }
}

/// A latency distribution as reports show it, in milliseconds; `None`
/// (`null` in JSON) without samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// The nearest-rank `p`-th percentile of `sorted` (ascending), or `None`
/// when it is empty.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(n) - 1])
}

/// `value` rounded to three decimals, so reports do not show float noise.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Milliseconds with two decimals, or `-`, for text tables.
pub fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank::<u32>(&[], 50.0), None);
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&sorted, 50.0), Some(50));
        assert_eq!(nearest_rank(&sorted, 99.0), Some(99));
        assert_eq!(nearest_rank(&sorted, 99.9), Some(100));
        assert_eq!(nearest_rank(&sorted, 100.0), Some(100));
        assert_eq!(nearest_rank(&sorted, 0.0), Some(1));
        assert_eq!(nearest_rank(&[7], 99.0), Some(7));
    }

    #[test]
    fn histogram_percentiles_are_within_a_thousandth() {
        let mut latency = Latency::default();
        assert_eq!(latency.summary(), LatencySummary::default());
        // 1 ms .. 10 s in 1 ms steps, shuffled order does not matter.
        for ms in (1..=10_000u64).rev() {
            latency.record(Duration::from_millis(ms));
        }
        assert_eq!(latency.count(), 10_000);
        let close = |p: f64, expected_ms: f64| {
            let got = latency.percentile(p).expect("samples").as_secs_f64() * 1000.0;
            assert!(
                (got - expected_ms).abs() <= expected_ms * 0.001 + 0.001,
                "p{p}: {got} vs {expected_ms}"
            );
        };
        close(50.0, 5000.0);
        close(90.0, 9000.0);
        close(99.0, 9900.0);
        close(99.9, 9990.0);
        close(100.0, 10_000.0);
        let summary = latency.summary();
        assert_eq!(summary.count, 10_000);
        let mean = summary.mean_ms.expect("mean");
        assert!((mean - 5000.5).abs() < 5.0, "{mean}");
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut latency = Latency::default();
        latency.record(Duration::ZERO);
        latency.record(Duration::from_secs(10 * 3600));
        assert_eq!(latency.count(), 2);
        assert_eq!(latency.percentile(0.0), Some(Duration::from_micros(1)));
        let max = latency.max().expect("max");
        assert!(max >= Duration::from_secs(3599), "{max:?}");
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(round3(1.234_567), 1.235);
        assert_eq!(ms(Some(12.345)), "12.35");
        assert_eq!(ms(None), "-");
    }
}
