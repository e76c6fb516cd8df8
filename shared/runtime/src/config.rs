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
        Ok(raw) => parsed(name, &raw),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(e).with_context(|| format!("environment variable {name}")),
    }
}

/// As [`var_or`], with the variables from `lookup`.
pub fn var_or_in<T>(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    lookup(name).map_or(Ok(default), |raw| parsed(name, &raw))
}

fn parsed<T>(name: &str, raw: &str) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    raw.trim()
        .parse()
        .map_err(|e| anyhow!("environment variable {name}={raw:?} is invalid: {e}"))
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

/// A secret given either as the variable `name` or as a file named by
/// `<name>_FILE` (as Kubernetes and Compose mount secrets), with the file's
/// surrounding whitespace trimmed; `None` when neither is set.
pub fn value_or_file(name: &str) -> anyhow::Result<Option<String>> {
    value_or_file_in(&|name| std::env::var(name).ok(), name)
}

/// As [`value_or_file`], with the variables from `lookup`.
pub fn value_or_file_in(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let file_var = format!("{name}_FILE");
    let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    match (var(name), var(&file_var)) {
        (Some(_), Some(_)) => Err(anyhow!("set {name} or {file_var}, not both")),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|text| Some(text.trim().to_owned()))
            .with_context(|| format!("reading {file_var}={path}")),
        (None, None) => Ok(None),
    }
}
