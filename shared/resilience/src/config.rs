//! Settings of the whole stack for one downstream. Each pattern's struct
//! lives beside its layer; this module gathers them and reads the
//! environment overrides, named `{PREFIX}_{SETTING}` (for example
//! `INVENTORY_TIMEOUT_MS`), so each downstream is tuned on its own.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use anyhow::anyhow;
use shipshape_runtime::config::{millis_or, var_or};

use crate::breaker::BreakerConfig;
use crate::bulkhead::BulkheadConfig;
use crate::retry::RetryConfig;
use crate::timeout::TimeoutConfig;

/// Everything [`crate::Downstream`] needs; `Default` is the documented
/// defaults of each pattern.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResilienceConfig {
    pub timeout: TimeoutConfig,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub bulkhead: BulkheadConfig,
}

impl ResilienceConfig {
    /// The defaults with the overrides found under `prefix` (used as given,
    /// without a trailing underscore: `"INVENTORY"`). A malformed or
    /// out-of-range value is an error naming its variable.
    pub fn from_env(prefix: &str) -> anyhow::Result<Self> {
        Self::from_env_over(prefix, Self::default())
    }

    /// The overrides found under `prefix` applied to `defaults`: a service
    /// whose calls sit inside another service's timeout chooses tighter
    /// defaults, and the environment still has the last word.
    pub fn from_env_over(prefix: &str, defaults: Self) -> anyhow::Result<Self> {
        Ok(Self {
            timeout: TimeoutConfig::from_env_over(prefix, defaults.timeout)?,
            retry: RetryConfig::from_env_over(prefix, defaults.retry)?,
            breaker: BreakerConfig::from_env_over(prefix, defaults.breaker)?,
            bulkhead: BulkheadConfig::from_env_over(prefix, defaults.bulkhead)?,
        })
    }
}

/// The variables under one prefix.
pub(crate) struct Vars<'a> {
    prefix: &'a str,
}

impl<'a> Vars<'a> {
    pub(crate) fn new(prefix: &'a str) -> Self {
        Self { prefix }
    }

    pub(crate) fn name(&self, setting: &str) -> String {
        format!("{}_{setting}", self.prefix)
    }

    pub(crate) fn get<T>(&self, setting: &str, default: T) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        var_or(&self.name(setting), default)
    }

    pub(crate) fn millis(&self, setting: &str, default: Duration) -> anyhow::Result<Duration> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        millis_or(&self.name(setting), default_ms)
    }

    /// A value that must lie in `range`: a zero window or a 150 % threshold
    /// would parse, but make the layer meaningless.
    pub(crate) fn within<T>(
        &self,
        setting: &str,
        default: T,
        range: RangeInclusive<T>,
    ) -> anyhow::Result<T>
    where
        T: FromStr + PartialOrd + Display,
        T::Err: Display,
    {
        let value = self.get(setting, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(anyhow!(
                "environment variable {}={value} is invalid: must be between {} and {}",
                self.name(setting),
                range.start(),
                range.end()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_env_without_overrides_is_the_default() {
        let config = ResilienceConfig::from_env("SHIPSHAPE_TEST_UNSET").unwrap();
        assert_eq!(config, ResilienceConfig::default());
        assert_eq!(config.timeout.duration, Duration::from_secs(3));
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.retry.base, Duration::from_millis(50));
        assert_eq!(config.retry.cap, Duration::from_secs(2));
        assert_eq!(config.retry.budget_percent, 20);
        assert_eq!(config.retry.min_per_second, 10);
        assert_eq!(config.breaker.window, 20);
        assert_eq!(config.breaker.min_calls, 10);
        assert_eq!(config.breaker.failure_percent, 50);
        assert_eq!(config.breaker.open_for, Duration::from_secs(5));
        assert_eq!(config.breaker.half_open_probes, 3);
        assert_eq!(config.bulkhead.max_concurrent, 64);
        assert_eq!(config.bulkhead.max_wait, Duration::ZERO);
    }
}
