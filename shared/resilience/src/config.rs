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
        Ok(Self {
            timeout: TimeoutConfig::from_env(prefix)?,
            retry: RetryConfig::from_env(prefix)?,
            breaker: BreakerConfig::from_env(prefix)?,
            bulkhead: BulkheadConfig::from_env(prefix)?,
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
    use std::process::Command;

    use super::*;

    /// Marks the child process of [`from_env_reads_overrides_and_names_bad_variables`].
    const CHILD: &str = "SHIPSHAPE_RESILIENCE_CONFIG_CHILD";

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
        assert_eq!(config.breaker.open_for, Duration::from_secs(30));
        assert_eq!(config.breaker.half_open_probes, 3);
        assert_eq!(config.bulkhead.max_concurrent, 64);
        assert_eq!(config.bulkhead.max_wait, Duration::ZERO);
    }

    /// Setting variables in this process needs `unsafe` (other test threads
    /// may read the environment), so the checks run in a child process
    /// started with the variables set.
    #[test]
    fn from_env_reads_overrides_and_names_bad_variables() {
        let exe = std::env::current_exe().unwrap();
        let output = Command::new(exe)
            .args([
                "config::tests::child_reads_its_environment",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("GOOD_TIMEOUT_ENABLED", "true")
            .env("GOOD_TIMEOUT_MS", "250")
            .env("GOOD_RETRY_ENABLED", "false")
            .env("GOOD_RETRY_MAX_ATTEMPTS", "5")
            .env("GOOD_RETRY_BASE_MS", "10")
            .env("GOOD_RETRY_CAP_MS", "500")
            .env("GOOD_RETRY_BUDGET_PERCENT", "10")
            .env("GOOD_RETRY_MIN_PER_SECOND", "2")
            .env("GOOD_BREAKER_ENABLED", "false")
            .env("GOOD_BREAKER_WINDOW", "40")
            .env("GOOD_BREAKER_MIN_CALLS", "20")
            .env("GOOD_BREAKER_FAILURE_PERCENT", "75")
            .env("GOOD_BREAKER_OPEN_MS", "5000")
            .env("GOOD_BREAKER_HALF_OPEN_PROBES", "1")
            .env("GOOD_BULKHEAD_ENABLED", "false")
            .env("GOOD_BULKHEAD_MAX_CONCURRENT", "8")
            .env("GOOD_BULKHEAD_MAX_WAIT_MS", "20")
            .env("BAD_WINDOW_BREAKER_WINDOW", "twenty")
            .env("BAD_PERCENT_BREAKER_FAILURE_PERCENT", "150")
            .env("BAD_MIN_CALLS_BREAKER_MIN_CALLS", "30")
            .env("BAD_TIMEOUT_TIMEOUT_MS", "-1")
            .env("BAD_SWITCH_RETRY_ENABLED", "no")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test: {stdout}"
        );
    }

    #[test]
    #[ignore = "run by from_env_reads_overrides_and_names_bad_variables with its environment"]
    fn child_reads_its_environment() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let config = ResilienceConfig::from_env("GOOD").unwrap();
        let expected = ResilienceConfig {
            timeout: TimeoutConfig {
                enabled: true,
                duration: Duration::from_millis(250),
            },
            retry: RetryConfig {
                enabled: false,
                max_attempts: 5,
                base: Duration::from_millis(10),
                cap: Duration::from_millis(500),
                budget_percent: 10,
                min_per_second: 2,
            },
            breaker: BreakerConfig {
                enabled: false,
                window: 40,
                min_calls: 20,
                failure_percent: 75,
                open_for: Duration::from_secs(5),
                half_open_probes: 1,
            },
            bulkhead: BulkheadConfig {
                enabled: false,
                max_concurrent: 8,
                max_wait: Duration::from_millis(20),
            },
        };
        assert_eq!(config, expected);

        for (prefix, variable) in [
            ("BAD_WINDOW", "BAD_WINDOW_BREAKER_WINDOW"),
            ("BAD_PERCENT", "BAD_PERCENT_BREAKER_FAILURE_PERCENT"),
            ("BAD_MIN_CALLS", "BAD_MIN_CALLS_BREAKER_MIN_CALLS"),
            ("BAD_TIMEOUT", "BAD_TIMEOUT_TIMEOUT_MS"),
            ("BAD_SWITCH", "BAD_SWITCH_RETRY_ENABLED"),
        ] {
            let error = ResilienceConfig::from_env(prefix).unwrap_err().to_string();
            assert!(error.contains(variable), "{prefix}: {error}");
        }
    }
}
