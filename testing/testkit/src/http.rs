//! Small HTTP helpers for tests that talk to the stack's JSON endpoints.
//!
//! Every client built here ignores proxy settings: the stack listens on
//! 127.0.0.1, and a developer's `http_proxy` must not swallow those calls.

use std::time::Duration;

use anyhow::Context;
pub use reqwest::StatusCode;
use serde_json::Value;

/// How long an idle pooled connection is kept: less than the gateway keeps
/// one (`HTTP_HEADER_TIMEOUT_MS`, 10 s by default), so a client never
/// reuses a connection just as the gateway closes it (the request would
/// fail without having been sent).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for the local stack: no proxy, 10 s per request.
///
/// Build one per test rather than sharing one across tests: a client's
/// pooled connections belong to the async runtime that opened them.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build()
        .context("building an HTTP client")
}

/// `GET url`: the status and the body as JSON (`Null` when empty, a JSON
/// string when the body is not JSON).
pub async fn get_json(url: &str) -> anyhow::Result<(StatusCode, Value)> {
    let response = client()?
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    read(response, "GET", url).await
}

async fn read(
    response: reqwest::Response,
    method: &str,
    url: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the body of {method} {url}"))?;
    Ok((status, parse_body(&text)))
}

fn parse_body(text: &str) -> Value {
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_are_json_when_they_can_be() {
        assert_eq!(parse_body(""), Value::Null);
        assert_eq!(parse_body(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(parse_body("busy"), json!("busy"));
    }
}
