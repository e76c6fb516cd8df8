//! Percentiles over recorded samples.

use std::time::Duration;

/// Latency samples, summarised by nearest-rank percentiles.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    sorted: Vec<Duration>,
    dirty: bool,
}

impl Samples {
    pub fn record(&mut self, sample: Duration) {
        self.sorted.push(sample);
        self.dirty = true;
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The nearest-rank `p`-th percentile (`p` in 0..=100), or `None` when
    /// there are no samples.
    pub fn percentile(&mut self, p: f64) -> Option<Duration> {
        if self.dirty {
            self.sorted.sort_unstable();
            self.dirty = false;
        }
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
        Some(self.sorted[rank.min(n) - 1])
    }
}

/// Milliseconds with two decimals, for reports.
pub fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.2}", d.as_secs_f64() * 1000.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        assert_eq!(s.percentile(50.0), None);
        for ms in (1..=100).rev() {
            s.record(Duration::from_millis(ms));
        }
        assert_eq!(s.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(s.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(s.percentile(100.0), Some(Duration::from_millis(100)));
        assert_eq!(s.percentile(0.0), Some(Duration::from_millis(1)));
    }
}
