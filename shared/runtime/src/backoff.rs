//! Exponential backoff with full jitter: the one delay every retry loop in
//! Shipshape waits, whether it retries a call, an event, a connection or a
//! relay batch.
//!
//! The delay before retry `n` is uniform in `[0, min(cap, base·2^(n-1))]`.
//! Spreading each wait over the whole interval (rather than adding a little
//! noise to a fixed delay) keeps many clients that failed together, say
//! every replica when the broker restarted, from retrying together.

use std::time::Duration;

/// The ceiling doubles at most this many times: far past any cap in use,
/// and `2^20` cannot overflow a `u32` multiplier.
const MAX_DOUBLINGS: u32 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// Retry 1 waits up to `base`, each later retry up to twice as long as
    /// the one before, and none longer than `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The longest wait before retry `retry` (1 for the first).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(MAX_DOUBLINGS);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// A random wait before retry `retry`, up to its [ceiling](Self::ceiling).
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    #[test]
    fn the_ceiling_doubles_from_base_up_to_cap() {
        let ceilings: Vec<u128> = (1..=8)
            .map(|retry| BACKOFF.ceiling(retry).as_millis())
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(BACKOFF.ceiling(0), Duration::from_millis(100));
        assert_eq!(BACKOFF.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn delays_spread_over_the_whole_interval() {
        fastrand::seed(11);
        let delays: Vec<Duration> = (0..1000).map(|_| BACKOFF.delay(4)).collect();
        let ceiling = BACKOFF.ceiling(4);
        assert!(delays.iter().all(|delay| *delay <= ceiling));
        // Full jitter: both the lowest and the highest tenth are reached.
        assert!(delays.iter().any(|delay| *delay < ceiling / 10));
        assert!(delays.iter().any(|delay| *delay > ceiling * 9 / 10));
    }
}
