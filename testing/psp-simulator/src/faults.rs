//! Faults switched on at runtime (`PUT /admin/faults`) so that resilience
//! and chaos tests can make the processor slow, failing, or forgetful about
//! answering, without restarting it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A `PUT` replaces all three; a field left out is switched off, and an
/// unknown one is rejected so that a typo cannot pass for "no fault".
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every `/v1` answer.
    pub latency_ms: u64,
    /// Fraction of `/v1` requests answered 503 without being processed.
    pub error_rate: f64,
    /// Fraction of `/v1` requests processed (a capture is charged) whose
    /// answer is then never sent in time: "charged, but the answer was lost".
    pub lose_response_rate: f64,
}

impl Faults {
    /// Longer than any client timeout worth testing.
    pub const MAX_LATENCY_MS: u64 = 60_000;

    pub fn validated(self) -> Result<Self, Error> {
        if self.latency_ms > Self::MAX_LATENCY_MS {
            return Err(Error::InvalidRequest(format!(
                "latency_ms must be at most {}, got {}",
                Self::MAX_LATENCY_MS,
                self.latency_ms
            )));
        }
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("lose_response_rate", self.lose_response_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::InvalidRequest(format!(
                    "{name} must be between 0 and 1, got {rate}"
                )));
            }
        }
        Ok(self)
    }

    /// Draws the faults for one request.
    pub fn plan(&self) -> Plan {
        Plan {
            latency: Duration::from_millis(self.latency_ms),
            fail: happens(self.error_rate),
            lose_response: happens(self.lose_response_rate),
        }
    }
}

/// The faults one request meets.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub latency: Duration,
    pub fail: bool,
    pub lose_response: bool,
}

impl Plan {
    /// Whether the request may be processed at all.
    pub fn admit(&self) -> Result<(), Error> {
        if self.fail {
            return Err(Error::ProcessorUnavailable);
        }
        Ok(())
    }
}

fn happens(rate: f64) -> bool {
    rate > 0.0 && fastrand::f64() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_outside_zero_to_one_are_invalid() {
        for faults in [
            Faults {
                error_rate: 1.01,
                ..Faults::default()
            },
            Faults {
                error_rate: -0.1,
                ..Faults::default()
            },
            Faults {
                lose_response_rate: 2.0,
                ..Faults::default()
            },
            Faults {
                error_rate: f64::NAN,
                ..Faults::default()
            },
            Faults {
                latency_ms: Faults::MAX_LATENCY_MS + 1,
                ..Faults::default()
            },
        ] {
            assert!(faults.validated().is_err(), "{faults:?}");
        }
    }

    #[test]
    fn the_bounds_are_valid() {
        let faults = Faults {
            latency_ms: Faults::MAX_LATENCY_MS,
            error_rate: 1.0,
            lose_response_rate: 0.0,
        };
        assert_eq!(faults.validated(), Ok(faults));
    }

    #[test]
    fn rate_one_always_happens_and_zero_never() {
        let always = Faults {
            error_rate: 1.0,
            lose_response_rate: 1.0,
            ..Faults::default()
        };
        let never = Faults::default();
        for _ in 0..1000 {
            let plan = always.plan();
            assert!(plan.fail && plan.lose_response);
            assert_eq!(plan.admit(), Err(Error::ProcessorUnavailable));
            let plan = never.plan();
            assert!(!plan.fail && !plan.lose_response);
            assert_eq!(plan.admit(), Ok(()));
        }
    }
}
