//! Reading the stack's settings from the environment. A test binary of its
//! own, with this one test, so setting variables cannot race another test
//! thread reading the environment.

use std::time::Duration;

use shipshape_resilience::{
    BreakerConfig, BulkheadConfig, ResilienceConfig, RetryConfig, TimeoutConfig,
};

const VARIABLES: &[(&str, &str)] = &[
    ("GOOD_TIMEOUT_ENABLED", "true"),
    ("GOOD_TIMEOUT_MS", "250"),
    ("GOOD_RETRY_ENABLED", "false"),
    ("GOOD_RETRY_MAX_ATTEMPTS", "5"),
    ("GOOD_RETRY_BASE_MS", "10"),
    ("GOOD_RETRY_CAP_MS", "500"),
    ("GOOD_RETRY_BUDGET_PERCENT", "10"),
    ("GOOD_RETRY_MIN_PER_SECOND", "2"),
    ("GOOD_BREAKER_ENABLED", "false"),
    ("GOOD_BREAKER_WINDOW", "40"),
    ("GOOD_BREAKER_MIN_CALLS", "20"),
    ("GOOD_BREAKER_FAILURE_PERCENT", "75"),
    ("GOOD_BREAKER_OPEN_MS", "5000"),
    ("GOOD_BREAKER_HALF_OPEN_PROBES", "1"),
    ("GOOD_BULKHEAD_ENABLED", "false"),
    ("GOOD_BULKHEAD_MAX_CONCURRENT", "8"),
    ("GOOD_BULKHEAD_MAX_WAIT_MS", "20"),
    ("OVER_TIMEOUT_MS", "700"),
    ("BAD_WINDOW_BREAKER_WINDOW", "twenty"),
    ("BAD_PERCENT_BREAKER_FAILURE_PERCENT", "150"),
    ("BAD_MIN_CALLS_BREAKER_MIN_CALLS", "30"),
    ("BAD_TIMEOUT_TIMEOUT_MS", "-1"),
    ("BAD_SWITCH_RETRY_ENABLED", "no"),
];

#[test]
fn from_env_reads_overrides_and_names_bad_variables() {
    for (name, value) in VARIABLES {
        // SAFETY: this binary runs this one test, on one thread, and sets
        // the variables before anything reads the environment.
        unsafe { std::env::set_var(name, value) };
    }

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
    assert_eq!(ResilienceConfig::from_env("GOOD").expect("GOOD"), expected);

    // A service's own defaults, with the environment overriding one of them.
    let mut service_defaults = ResilienceConfig::default();
    service_defaults.retry.max_attempts = 2;
    service_defaults.timeout.duration = Duration::from_millis(500);
    let over = ResilienceConfig::from_env_over("OVER", service_defaults).expect("OVER");
    assert_eq!(over.retry.max_attempts, 2);
    assert_eq!(over.timeout.duration, Duration::from_millis(700));

    for (prefix, variable) in [
        ("BAD_WINDOW", "BAD_WINDOW_BREAKER_WINDOW"),
        ("BAD_PERCENT", "BAD_PERCENT_BREAKER_FAILURE_PERCENT"),
        ("BAD_MIN_CALLS", "BAD_MIN_CALLS_BREAKER_MIN_CALLS"),
        ("BAD_TIMEOUT", "BAD_TIMEOUT_TIMEOUT_MS"),
        ("BAD_SWITCH", "BAD_SWITCH_RETRY_ENABLED"),
    ] {
        let error = ResilienceConfig::from_env(prefix)
            .expect_err(prefix)
            .to_string();
        assert!(error.contains(variable), "{prefix}: {error}");
    }
}
