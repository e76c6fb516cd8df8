//! The gateway's public API as the load test uses it, with every failure
//! sorted into an [`ErrorKind`].

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Why a request, or a checkout, failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// `429`: the gateway's per-client rate limit.
    RateLimited,
    /// `503`: load shedding, or a service behind the gateway unavailable.
    Unavailable,
    /// No answer within the request timeout.
    Timeout,
    /// Any other `5xx`.
    ServerError,
    /// A `4xx` other than 429: the load test sent something the API refused,
    /// or the API broke its contract.
    ClientError,
    /// The connection could not be made or broke.
    Connection,
    /// An answer the API contract does not allow (not JSON, a missing field).
    BadResponse,
    /// The generator had reached `--max-in-flight` checkouts when this one
    /// was due, so it was never started. Counted, never silently dropped.
    GeneratorOverloaded,
    /// The order was not terminal when the per-order timeout ran out.
    NotTerminal,
    /// The order ended differently from the path it was sent down (a valid
    /// order cancelled, say).
    UnexpectedOutcome,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited_429",
            ErrorKind::Unavailable => "unavailable_503",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ServerError => "server_error_5xx",
            ErrorKind::ClientError => "client_error_4xx",
            ErrorKind::Connection => "connection",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::GeneratorOverloaded => "generator_overloaded",
            ErrorKind::NotTerminal => "not_terminal",
            ErrorKind::UnexpectedOutcome => "unexpected_outcome",
        }
    }

    fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            429 => ErrorKind::RateLimited,
            503 => ErrorKind::Unavailable,
            500..=599 => ErrorKind::ServerError,
            _ => ErrorKind::ClientError,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed request: its kind and what happened, for the first few errors
/// of a kind that reports quote.
#[derive(Clone, Debug)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl RequestError {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    fn transport(error: &reqwest::Error) -> Self {
        let kind = if error.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connection
        };
        // The cause worth reading ("connection refused") sits several
        // sources down.
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::new(kind, detail)
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for RequestError {}

/// A secret (the gateway's admin token) that never appears in `Debug`
/// output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A product as `GET /api/v1/products` lists it (the fields used here).
#[derive(Clone, Debug, Deserialize)]
pub struct Product {
    pub sku: String,
    pub available: i64,
}

#[derive(Deserialize)]
struct ProductList {
    products: Vec<Product>,
}

#[derive(Deserialize)]
struct Accepted {
    order_id: String,
}

/// An order as `GET /api/v1/orders/{id}` shows it (the fields used here).
#[derive(Clone, Debug, Deserialize)]
pub struct Order {
    pub status: String,
    pub cancellation_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Order {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "CONFIRMED" | "CANCELLED")
    }

    /// How long the saga took by the order's own clock: placed to terminal.
    pub fn saga_latency(&self) -> Option<Duration> {
        let completed = self.completed_at?;
        (completed - self.created_at).to_std().ok()
    }
}

/// Requests to one gateway. Cheap to clone (one connection pool).
#[derive(Clone, Debug)]
pub struct Gateway {
    http: reqwest::Client,
    base: String,
    /// The bearer token of the customer the orders belong to.
    customer: Option<Secret>,
}

/// Sent with every request of the load test, so operators can tell its
/// traffic from real shoppers' in logs.
const USER_AGENT: &str = concat!("shipshape-loadtest/", env!("CARGO_PKG_VERSION"));

impl Gateway {
    /// A client for the gateway at `base` (`http://127.0.0.1:8080`) that
    /// gives up on a request after `timeout`.
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .tcp_nodelay(true)
            // Connections are reused across checkouts; no cap, because an
            // open-model run may have hundreds of requests in flight.
            .pool_max_idle_per_host(usize::MAX)
            // Less than the gateway keeps an idle connection (its header
            // timeout, 10 s by default): a connection is never reused just
            // as the gateway closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            .user_agent(USER_AGENT)
            // A proxy from the environment would be measured too.
            .no_proxy()
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            customer: None,
        })
    }

    /// Places and reads orders as the customer `token` names.
    pub fn with_customer(mut self, token: Option<Secret>) -> Self {
        self.customer = token;
        self
    }

    /// A request on behalf of the customer.
    fn customer_request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.request(method, path);
        match &self.customer {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `GET /api/v1/products`.
    pub async fn list_products(&self) -> Result<Vec<Product>, RequestError> {
        let list: ProductList = send(self.request(Method::GET, "/api/v1/products")).await?;
        Ok(list.products)
    }

    /// `GET /api/v1/products/{sku}`.
    pub async fn product(&self, sku: &str) -> Result<Product, RequestError> {
        send(self.request(Method::GET, &format!("/api/v1/products/{sku}"))).await
    }

    /// `POST /api/v1/orders` with an idempotency key; the new order's id.
    pub async fn place_order(
        &self,
        body: &Value,
        idempotency_key: &str,
    ) -> Result<String, RequestError> {
        let request = self
            .customer_request(Method::POST, "/api/v1/orders")
            .header("Idempotency-Key", idempotency_key)
            .json(body);
        let accepted: Accepted = send(request).await?;
        Ok(accepted.order_id)
    }

    /// `GET /api/v1/orders/{id}`.
    pub async fn order(&self, order_id: &str) -> Result<Order, RequestError> {
        send(self.customer_request(Method::GET, &format!("/api/v1/orders/{order_id}"))).await
    }

    /// `PUT /api/v1/admin/products/{sku}/stock`: adds `units`.
    pub async fn restock(
        &self,
        sku: &str,
        units: i64,
        admin_token: &Secret,
    ) -> Result<Product, RequestError> {
        let request = self
            .request(Method::PUT, &format!("/api/v1/admin/products/{sku}/stock"))
            .bearer_auth(admin_token.expose())
            .json(&json!({"add": units}));
        send(request).await
    }
}

/// Sends `request` and decodes a 2xx JSON answer; anything else is a
/// [`RequestError`] of the matching kind.
async fn send<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, RequestError> {
    let response = request
        .send()
        .await
        .map_err(|e| RequestError::transport(&e))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| RequestError::transport(&e))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.chars().take(300).collect();
        return Err(RequestError::new(
            ErrorKind::from_status(status),
            format!("{status}: {text}"),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        RequestError::new(
            ErrorKind::BadResponse,
            format!(
                "{status} with an unexpected body ({e}): {}",
                String::from_utf8_lossy(&body)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_kinds() {
        let kind = |code: u16| ErrorKind::from_status(StatusCode::from_u16(code).expect("code"));
        assert_eq!(kind(429), ErrorKind::RateLimited);
        assert_eq!(kind(503), ErrorKind::Unavailable);
        assert_eq!(kind(500), ErrorKind::ServerError);
        assert_eq!(kind(502), ErrorKind::ServerError);
        assert_eq!(kind(400), ErrorKind::ClientError);
        assert_eq!(kind(404), ErrorKind::ClientError);
    }

    #[test]
    fn the_saga_latency_comes_from_the_orders_own_timestamps() {
        let order: Order = serde_json::from_value(json!({
            "order_id": "0193b6d2-7c1e-7a3b-9f00-1234567890ab",
            "status": "CONFIRMED",
            "cancellation_reason": null,
            "created_at": "2025-01-31T09:30:00.000042Z",
            "completed_at": "2025-01-31T09:30:00.125042Z",
        }))
        .expect("order");
        assert!(order.is_terminal());
        assert_eq!(order.saga_latency(), Some(Duration::from_millis(125)));

        let pending: Order = serde_json::from_value(json!({
            "status": "PENDING",
            "cancellation_reason": null,
            "created_at": "2025-01-31T09:30:00Z",
            "completed_at": null,
        }))
        .expect("order");
        assert!(!pending.is_terminal());
        assert_eq!(pending.saga_latency(), None);
    }
}
