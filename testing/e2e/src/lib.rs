//! A shopper's and an auditor's view of a running stack, for end-to-end
//! tests: place orders through the public API, wait for their outcome, and
//! check the saga's invariants with `shipshape-invariants` (every service's
//! database, the payment provider's ledger and the broker).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shipshape_invariants::{Checker, SourceMessage, Sources};
use shipshape_kafka::Connection;
use shipshape_testkit::{Service, Stack, StackOptions};
use sqlx::PgPool;
use uuid::Uuid;

pub use shipshape_invariants::Ledger;

pub mod poison;

/// A message as it was published: topic (on the broker), key, payload.
pub type Published = (String, Vec<u8>, Vec<u8>);

/// A message as it was published, with the partition it is on: messages
/// keep their order within a partition only.
#[derive(Debug, Clone)]
pub struct Record {
    /// The topic's name on the broker.
    pub topic: String,
    pub partition: i32,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Every message on `topics` (their names on the broker), in partition
/// order, read through `connection` from the beginning with no group
/// offsets moved.
fn read_all(connection: &Connection, topics: &[String]) -> anyhow::Result<Vec<Record>> {
    let consumer: BaseConsumer = connection
        .client_config()
        .set("group.id", format!("e2e-reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(5);
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0;
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
            expected += usize::try_from(high - low)?;
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut messages = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while messages.len() < expected && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let m = message?;
            messages.push(Record {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    anyhow::ensure!(
        messages.len() == expected,
        "read {} of {expected} messages",
        messages.len()
    );
    Ok(messages)
}

/// The value of `series` (a metric name with its labels, exactly as
/// rendered) in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// The customer a [`Shop`] places and reads orders as.
pub const SHOPPER: &str = "e2e-shopper";

pub struct Shop {
    pub stack: Stack,
    http: reqwest::Client,
    /// [`SHOPPER`]'s bearer token.
    token: String,
    databases: HashMap<Service, PgPool>,
    /// The invariant checker, over the same databases, PSP and broker.
    checker: Checker,
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
        let url = |service| -> anyhow::Result<String> {
            let url = stack.database_url(service);
            Ok(url.context("service without a database")?.to_owned())
        };
        let mut databases = HashMap::new();
        for service in [
            Service::Order,
            Service::Inventory,
            Service::Payment,
            Service::Shipping,
        ] {
            databases.insert(service, PgPool::connect(&url(service)?).await?);
        }
        let checker = Checker::connect(Sources {
            order_db: url(Service::Order)?,
            inventory_db: url(Service::Inventory)?,
            payment_db: url(Service::Payment)?,
            shipping_db: url(Service::Shipping)?,
            psp_url: Some(stack.psp_url()),
            broker: Some(stack.broker_admin()),
            topic_prefix: stack.topic_prefix().to_owned(),
        })
        .await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(shipshape_testkit::http::POOL_IDLE_TIMEOUT)
            .build()?;
        let token = stack.token(SHOPPER, &[])?;
        Ok(Self {
            stack,
            http,
            token,
            databases,
            checker,
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
        let mut request = self
            .http
            .post(self.url("/api/v1/orders"))
            .bearer_auth(&self.token)
            .json(body);
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
        answer(
            self.http
                .get(self.url(path))
                .bearer_auth(&self.token)
                .send()
                .await?,
        )
        .await
    }

    /// GETs `path` as the shop's customer; returns status and JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await?;
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

    /// Makes the pending order `order_id`'s deadline pass now, as the clock
    /// would: the order service's deadline sweep cancels it (`timed_out`)
    /// within a sweep interval, through the same code as a deadline that ran
    /// out. Tests whose path depends on what the deadline meets run with a
    /// deadline no order reaches and call this once that has happened,
    /// instead of racing the clock.
    pub async fn pass_deadline(&self, order_id: &str) -> anyhow::Result<()> {
        let passed = sqlx::query(
            "UPDATE orders SET deadline_at = now() WHERE order_id = $1 AND status = 'PENDING'",
        )
        .bind(Uuid::parse_str(order_id)?)
        .execute(self.db(Service::Order))
        .await?
        .rows_affected();
        anyhow::ensure!(
            passed == 1,
            "order {order_id} is no longer pending: its deadline cannot pass"
        );
        Ok(())
    }

    /// Once the PSP has charged `order_id` (it charges `tok_slow` on arrival
    /// and answers later), passes the order's deadline
    /// ([`Shop::pass_deadline`]), then waits until the payment service learns
    /// of the cancellation and checks that the PSP's answer was still out:
    /// the path of a capture that completes late, whatever the machine's
    /// speed. Left to the clock, the deadline could come before the capture
    /// (the payment is voided) or after its answer (captured, then refunded
    /// as any cancelled order's).
    pub async fn cancel_during_the_capture(
        &self,
        order_id: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let id = Uuid::parse_str(order_id)?;
        let give_up = tokio::time::Instant::now() + within;
        loop {
            let payment: Option<Uuid> =
                sqlx::query_scalar("SELECT payment_id FROM payments WHERE order_id = $1")
                    .bind(id)
                    .fetch_optional(self.db(Service::Payment))
                    .await?;
            if let Some(payment) = payment
                && self.ledger().await?.for_payment(payment).0 == 1
            {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < give_up,
                "the PSP never charged order {order_id}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pass_deadline(order_id).await?;
        loop {
            // One row read, so both hold at once.
            let (status, compensate): (String, bool) =
                sqlx::query_as("SELECT status, compensate FROM payments WHERE order_id = $1")
                    .bind(id)
                    .fetch_one(self.db(Service::Payment))
                    .await?;
            if compensate {
                anyhow::ensure!(
                    status == "CAPTURE_PENDING",
                    "the cancellation reached the payment after the PSP's answer (payment \
                     {status}): not the path of a late capture"
                );
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < give_up,
                "the payment never learned that order {order_id} was cancelled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The payment provider's ledger.
    pub async fn ledger(&self) -> anyhow::Result<Ledger> {
        self.checker
            .ledger()
            .await?
            .context("the checker was given no PSP")
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

    /// Publishes raw bytes to `topic` (named as the services name it; the
    /// stack's topic prefix is added), as a misbehaving producer could. The
    /// dead letters the services make of it are expected, so
    /// [`Shop::violations`] does not report them.
    pub async fn publish_raw(&self, topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<()> {
        let topic = &self.stack.topic(topic);
        let producer: FutureProducer = self.stack.broker_admin().client_config().create()?;
        let delivered = producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        self.checker.explain(SourceMessage {
            topic: topic.to_owned(),
            partition: delivered.partition,
            offset: delivered.offset,
        });
        Ok(())
    }

    /// Every message on `topics` (named as the services name them), in
    /// partition order: its topic on the broker, key and payload.
    pub async fn published(&self, topics: &[&str]) -> anyhow::Result<Vec<Published>> {
        let records = self.published_records(topics).await?;
        Ok(records
            .into_iter()
            .map(|r| (r.topic, r.key, r.payload))
            .collect())
    }

    /// Every message on `topics` (named as the services name them), with
    /// the partition it is on, in partition order.
    pub async fn published_records(&self, topics: &[&str]) -> anyhow::Result<Vec<Record>> {
        let connection = self.stack.broker_admin();
        let topics: Vec<String> = topics.iter().map(|t| self.stack.topic(t)).collect();
        tokio::task::spawn_blocking(move || read_all(&connection, &topics)).await?
    }

    /// Every message on the dead-letter topic: its `dlq.*` headers.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<HashMap<String, String>>> {
        let letters = self.checker.dead_letters().await?;
        Ok(letters
            .into_iter()
            .map(|letter| letter.headers.into_iter().collect())
            .collect())
    }

    /// Waits until every consumer group has committed every message on its
    /// topics (consumer lag 0), every outbox is empty, every order is
    /// terminal and no payment waits for a PSP call.
    pub async fn wait_quiet(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending = self.checker.check_quiet().await?;
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let pending: Vec<String> = pending.iter().map(ToString::to_string).collect();
                bail!("not quiet after {timeout:?}: {pending:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every violation of the saga's invariants (see `shipshape-invariants`),
    /// one line each. Call it once the system is quiet.
    pub async fn violations(&self) -> anyhow::Result<Vec<String>> {
        let report = self.checker.check().await?;
        Ok(report.violations.iter().map(ToString::to_string).collect())
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

    /// A declined card: the stock released, no money taken, nothing shipped.
    pub fn declined() -> Self {
        Self {
            status: "CANCELLED",
            reason: Some("payment_declined"),
            reservation: "RELEASED",
            payment: "DECLINED",
            captures: 0,
            refunds: 0,
            shipped: false,
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
