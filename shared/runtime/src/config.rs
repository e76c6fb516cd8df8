//! Configuration comes from environment variables with documented defaults;
//! a malformed value stops the process with a message naming the variable.

use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow};

/// The variable's value parsed as `T`, or `default` when it is unset.
pub fn var_or<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(raw) => raw
            .trim()
            .parse()
            .map_err(|e| anyhow!("environment variable {name}={raw:?} is invalid: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(e).with_context(|| format!("environment variable {name}")),
    }
}

/// The variable's value, or `default` when it is unset.
pub fn string_or(name: &str, default: &str) -> anyhow::Result<String> {
    var_or(name, default.to_owned())
}

/// A duration given in milliseconds.
pub fn millis_or(name: &str, default_ms: u64) -> anyhow::Result<Duration> {
    var_or(name, default_ms).map(Duration::from_millis)
}

/// A socket address such as `0.0.0.0:8080`.
pub fn addr_or(name: &str, default: &str) -> anyhow::Result<SocketAddr> {
    let fallback = default
        .parse()
        .with_context(|| format!("default for {name}"))?;
    var_or(name, fallback)
}
