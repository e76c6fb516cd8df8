//! A shopper's and an auditor's view of a running stack, for end-to-end
//! tests: place orders through the public API, wait for their outcome, and
//! read every service's database and the payment provider's ledger to check
//! the saga's invariants.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shipshape_testkit::{Service, Stack, StackOptions};
use sqlx::PgPool;
use uuid::Uuid;

/// Where the services put messages they cannot handle.
pub const DEAD_LETTER_TOPIC: &str = "dead-letters";

/// The value of `series` (a metric name with its labels, exactly as
/// rendered) in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Which consumer group reads which topics (as the services subscribe).
const SUBSCRIPTIONS: &[(&str, &[&str])] = &[
    (
        "shipshape-order",
        &["inventory.events", "payment.events", "shipping.events"],
    ),
    (
        "shipshape-inventory",
        &["order.events", "payment.events", "shipping.events"],
    ),
    (
        "shipshape-payment",
        &["order.events", "inventory.events", "shipping.events"],
    ),
    ("shipshape-shipping", &["order.events", "payment.events"]),
];

pub struct Shop {
    pub stack: Stack,
    http: reqwest::Client,
    databases: HashMap<Service, PgPool>,
}

/// A shipping address in a country the shipping service serves.
pub fn address(country: &str) -> Value {
    json!({"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": country})
}

/// An order body for `items` paid with `card` and shipped to `country`.
pub fn order_body(items: &[(&str, i64)], card: &str, country: &str) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
        .collect();
    json!({"items": items, "payment": {"card_token": card}, "shipping_address": address(country)})
}

/// A response's status, headers and JSON body.
async fn answer(
    response: reqwest::Response,
) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    Ok((status, headers, body))
}

impl Shop {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(StackOptions::for_tests()?).await
    }

    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        let stack = Stack::start(options).await?;
        let mut databases = HashMap::new();
        for service in [
            Service::Order,
            Service::Inventory,
            Service::Payment,
            Service::Shipping,
        ] {
            let url = stack
                .database_url(service)
                .context("service without a database")?;
            databases.insert(service, PgPool::connect(url).await?);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            stack,
            http,
            databases,
        })
    }

    pub fn db(&self, service: Service) -> &PgPool {
        &self.databases[&service]
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.stack.gateway_url())
    }

    /// POSTs an order; returns status, headers and JSON body.
    pub async fn post_order(
        &self,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
        let mut request = self.http.post(self.url("/api/v1/orders")).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        answer(request.send().await?).await
    }

    /// Places an order that must be accepted; returns its id.
    pub async fn place(
        &self,
        items: &[(&str, i64)],
        card: &str,
        country: &str,
    ) -> anyhow::Result<String> {
        let (status, _, body) = self
            .post_order(&order_body(items, card, country), None)
            .await?;
        if status != StatusCode::ACCEPTED {
            bail!("order not accepted: {status} {body}");
        }
        Ok(body["order_id"].as_str().context("no order_id")?.to_owned())
    }

    /// GETs `path`; returns status, headers and JSON body.
    pub async fn get_with_headers(
        &self,
        path: &str,
    ) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
        answer(self.http.get(self.url(path)).send().await?).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        let response = self.http.get(self.url(path)).send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?,
        ))
    }

    /// Polls the order until CONFIRMED or CANCELLED.
    pub async fn wait_terminal(&self, order_id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, order) = self.get(&format!("/api/v1/orders/{order_id}")).await?;
            if status == StatusCode::OK
                && matches!(order["status"].as_str(), Some("CONFIRMED" | "CANCELLED"))
            {
                return Ok(order);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("order {order_id} not terminal after {timeout:?}: {status} {order}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Units of `sku` available now.
    pub async fn available(&self, sku: &str) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT available FROM products WHERE sku = $1")
                .bind(sku)
                .fetch_one(self.db(Service::Inventory))
                .await?,
        )
    }

    /// What each service holds for one order.
    pub async fn effects(&self, order_id: &str) -> anyhow::Result<Effects> {
        let id = Uuid::parse_str(order_id)?;
        let reservation = sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
            .bind(id)
            .fetch_optional(self.db(Service::Inventory))
            .await?;
        let payment: Option<(String, Uuid)> =
            sqlx::query_as("SELECT status, payment_id FROM payments WHERE order_id = $1")
                .bind(id)
                .fetch_optional(self.db(Service::Payment))
                .await?;
        let shipment = sqlx::query_scalar("SELECT status FROM shipments WHERE order_id = $1")
            .bind(id)
            .fetch_optional(self.db(Service::Shipping))
            .await?;
        let ledger = self.ledger().await?;
        let (captures, refunds) = match &payment {
            Some((_, payment_id)) => ledger.for_payment(*payment_id),
            None => (0, 0),
        };
        Ok(Effects {
            reservation,
            payment: payment.map(|(status, _)| status),
            shipment,
            captures,
            refunds,
        })
    }

    pub async fn ledger(&self) -> anyhow::Result<Ledger> {
        let body: Value = self
            .http
            .get(format!("{}/admin/ledger", self.stack.psp_url()))
            .send()
            .await?
            .json()
            .await?;
        let keys = |field: &str, approved_only: bool| -> Vec<String> {
            body[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| !approved_only || e["status"] == "approved")
                .filter_map(|e| e["idempotency_key"].as_str().map(str::to_owned))
                .collect()
        };
        Ok(Ledger {
            approved_captures: keys("captures", true),
            refunds: keys("refunds", false),
        })
    }

    /// Sets the payment provider's injected latency and error rate.
    pub async fn psp_faults(&self, latency_ms: u64, error_rate: f64) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("{}/admin/faults", self.stack.psp_url()))
            .json(&json!({"latency_ms": latency_ms, "error_rate": error_rate}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "faults not set: {}",
            response.status()
        );
        Ok(())
    }

    /// The `service`'s Prometheus metrics, as its ops server renders them.
    pub async fn metrics(&self, service: Service) -> anyhow::Result<String> {
        let url = format!("{}/metrics", self.stack.ops_url(service));
        let response = self.http.get(&url).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        Ok(response.text().await?)
    }

    /// The value of one series, named with its labels exactly as rendered
    /// (`shipshape_breaker_state{downstream="psp"}`); `None` when absent.
    pub async fn metric(&self, service: Service, series: &str) -> anyhow::Result<Option<f64>> {
        let text = self.metrics(service).await?;
        Ok(metric_value(&text, series))
    }

    /// Publishes raw bytes to `topic`, as a misbehaving producer could.
    pub async fn publish_raw(&self, topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<()> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.stack.broker_address())
            .set("enable.metrics.push", "false")
            .create()?;
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    /// Every message on the dead-letter topic: its `dlq.*` headers.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<HashMap<String, String>>> {
        let brokers = self.stack.broker_address();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("e2e-dlq-reader-{}", Uuid::new_v4()))
                .set("enable.metrics.push", "false")
                .set("enable.auto.commit", "false")
                .create()?;
            let timeout = Duration::from_secs(5);
            let metadata = consumer.fetch_metadata(Some(DEAD_LETTER_TOPIC), timeout)?;
            let mut partitions = TopicPartitionList::new();
            let mut remaining = 0;
            for topic in metadata.topics() {
                for p in topic.partitions() {
                    let (low, high) =
                        consumer.fetch_watermarks(DEAD_LETTER_TOPIC, p.id(), timeout)?;
                    remaining += high - low;
                    partitions.add_partition_offset(
                        DEAD_LETTER_TOPIC,
                        p.id(),
                        Offset::Beginning,
                    )?;
                }
            }
            consumer.assign(&partitions)?;
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            let mut letters = Vec::new();
            while remaining > 0 && std::time::Instant::now() < deadline {
                let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let message = message?;
                let mut headers = HashMap::new();
                if let Some(all) = message.headers() {
                    for header in all.iter() {
                        let value = header
                            .value
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        headers.insert(header.key.to_owned(), value.into_owned());
                    }
                }
                letters.push(headers);
                remaining -= 1;
            }
            anyhow::ensure!(remaining == 0, "{remaining} dead letters could not be read");
            Ok(letters)
        })
        .await?
    }

    /// Waits until every consumer group has committed every message on its
    /// topics (consumer lag 0) and every outbox is empty.
    pub async fn wait_quiet(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let lag = self.lag().await?;
            let backlog = self.outbox_backlog().await?;
            if lag.is_empty() && backlog == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("not quiet after {timeout:?}: lag {lag:?}, outbox backlog {backlog}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn outbox_backlog(&self) -> anyhow::Result<i64> {
        let mut total = 0;
        for pool in self.databases.values() {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(pool)
                .await?;
            total += n;
        }
        Ok(total)
    }

    /// `(group, topic, partition, lag)` for every partition still behind.
    async fn lag(&self) -> anyhow::Result<Vec<(String, String, i32, i64)>> {
        let brokers = self.stack.broker_address();
        tokio::task::spawn_blocking(move || {
            let mut behind = Vec::new();
            for (group, topics) in SUBSCRIPTIONS {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("group.id", *group)
                    .set("enable.metrics.push", "false")
                    .create()?;
                let timeout = Duration::from_secs(5);
                let mut partitions = TopicPartitionList::new();
                for topic in *topics {
                    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
                    for t in metadata.topics() {
                        for p in t.partitions() {
                            partitions.add_partition(topic, p.id());
                        }
                    }
                }
                let committed = consumer.committed_offsets(partitions, timeout)?;
                for element in committed.elements() {
                    let (_, high) =
                        consumer.fetch_watermarks(element.topic(), element.partition(), timeout)?;
                    let done = match element.offset() {
                        Offset::Offset(o) => o,
                        _ => 0,
                    };
                    if done < high {
                        behind.push((
                            group.to_string(),
                            element.topic().to_owned(),
                            element.partition(),
                            high - done,
                        ));
                    }
                }
            }
            Ok(behind)
        })
        .await?
    }

    /// Every violation of the saga's invariants, by order. Call it once the
    /// system is quiet.
    pub async fn violations(&self) -> anyhow::Result<Vec<String>> {
        let mut found = Vec::new();
        let orders: Vec<(Uuid, String)> = sqlx::query_as("SELECT order_id, status FROM orders")
            .fetch_all(self.db(Service::Order))
            .await?;
        let ledger = self.ledger().await?;
        for (order_id, status) in orders {
            let id = order_id.to_string();
            let e = self.effects(&id).await?;
            let problem = match status.as_str() {
                "CONFIRMED" => {
                    let ok = e.reservation.as_deref() == Some("COMMITTED")
                        && e.payment.as_deref() == Some("CAPTURED")
                        && e.captures == 1
                        && e.refunds == 0
                        && e.shipment.as_deref() == Some("SCHEDULED");
                    (!ok).then(|| format!("confirmed order {id} does not hold exactly its stock, one capture and one shipment: {e:?}"))
                }
                "CANCELLED" => {
                    let ok = matches!(e.reservation.as_deref(), Some("REJECTED" | "RELEASED"))
                        && e.captures <= 1
                        && e.refunds == e.captures
                        && e.shipment.as_deref() != Some("SCHEDULED");
                    (!ok).then(|| {
                        format!(
                            "cancelled order {id} still holds stock, money or a shipment: {e:?}"
                        )
                    })
                }
                other => Some(format!("order {id} is {other}, not terminal")),
            };
            found.extend(problem);
        }
        let mut charges: HashMap<&str, usize> = HashMap::new();
        for key in &ledger.approved_captures {
            *charges.entry(key).or_default() += 1;
        }
        found.extend(
            charges
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(key, n)| format!("payment {key} captured {n} times")),
        );
        let unbalanced: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT p.sku, p.stock_received, p.available, \
               COALESCE(SUM(l.quantity) FILTER (WHERE r.status = 'RESERVED'), 0)::bigint, \
               COALESCE(SUM(l.quantity) FILTER (WHERE r.status = 'COMMITTED'), 0)::bigint \
             FROM products p \
             LEFT JOIN reservation_lines l ON l.sku = p.sku \
             LEFT JOIN reservations r ON r.order_id = l.order_id \
             GROUP BY p.sku, p.stock_received, p.available",
        )
        .fetch_all(self.db(Service::Inventory))
        .await?;
        for (sku, received, available, reserved, sold) in unbalanced {
            if received != available + reserved + sold {
                found.push(format!(
                    "stock of {sku} not conserved: received {received} != available {available} + reserved {reserved} + sold {sold}"
                ));
            }
        }
        Ok(found)
    }
}

/// How a finished checkout must look from outside and in every service.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome<S = &'static str> {
    pub status: S,
    pub reason: Option<S>,
    pub reservation: S,
    pub payment: S,
    /// Approved captures and refunds in the payment provider's ledger.
    pub captures: usize,
    pub refunds: usize,
    /// A shipment is scheduled (as opposed to none, failed or called off).
    pub shipped: bool,
}

impl Outcome {
    /// The happy path: stock taken, one capture, one shipment.
    pub fn confirmed() -> Self {
        Self {
            status: "CONFIRMED",
            reason: None,
            reservation: "COMMITTED",
            payment: "CAPTURED",
            captures: 1,
            refunds: 0,
            shipped: true,
        }
    }
}

impl Shop {
    /// Waits until `order_id` is terminal and the system is quiet, then checks
    /// the order and every service's effects against `expected`, and that no
    /// invariant is violated anywhere.
    pub async fn assert_outcome(&self, order_id: &str, expected: Outcome) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(30);
        let order = self.wait_terminal(order_id, timeout).await?;
        self.wait_quiet(timeout).await?;
        let effects = self.effects(order_id).await?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let actual = Outcome {
            status: text(&order["status"]),
            reason: order["cancellation_reason"].as_str().map(str::to_owned),
            reservation: effects.reservation.clone().unwrap_or_default(),
            payment: effects.payment.clone().unwrap_or_default(),
            captures: effects.captures,
            refunds: effects.refunds,
            shipped: effects.shipment.as_deref() == Some("SCHEDULED"),
        };
        let expected = Outcome {
            status: expected.status.to_owned(),
            reason: expected.reason.map(str::to_owned),
            reservation: expected.reservation.to_owned(),
            payment: expected.payment.to_owned(),
            captures: expected.captures,
            refunds: expected.refunds,
            shipped: expected.shipped,
        };
        anyhow::ensure!(
            actual == expected,
            "order {order_id}: {actual:?} != expected {expected:?}"
        );
        let violations = self.violations().await?;
        anyhow::ensure!(
            violations.is_empty(),
            "invariants violated: {violations:#?}"
        );
        Ok(())
    }
}

/// What each service holds for one order.
#[derive(Debug)]
pub struct Effects {
    pub reservation: Option<String>,
    pub payment: Option<String>,
    pub shipment: Option<String>,
    /// Approved captures in the payment provider's ledger.
    pub captures: usize,
    pub refunds: usize,
}

/// The payment provider's record of money movements, by idempotency key.
pub struct Ledger {
    pub approved_captures: Vec<String>,
    pub refunds: Vec<String>,
}

impl Ledger {
    /// `(approved captures, refunds)` made for a payment.
    pub fn for_payment(&self, payment_id: Uuid) -> (usize, usize) {
        let key = payment_id.to_string();
        let refund_key = format!("refund-{key}");
        (
            self.approved_captures.iter().filter(|k| **k == key).count(),
            self.refunds.iter().filter(|k| **k == refund_key).count(),
        )
    }
}
