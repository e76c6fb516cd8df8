//! The transactional outbox: [`enqueue`] writes an event in the caller's
//! transaction; [`OutboxRelay`] publishes committed rows, in order.

use std::time::Duration;

use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use shipshape_proto::Event;
use shipshape_runtime::Backoff;
use shipshape_telemetry::TraceContext;
use shipshape_types::OrderId;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::envelope::{self, Incoming};

/// The channel the relay listens on. NOTIFY inside a transaction is
/// delivered at commit, so the relay wakes exactly when rows become visible.
const CHANNEL: &str = "shipshape_outbox";
/// Serialises relays of replicas sharing one database, so rows are published
/// in id order even when several relays run.
const RELAY_LOCK_KEY: i64 = 0x5348_4950_4f55_5442; // "SHIPOUTB"
/// How often the relay counts the rows waiting (`shipshape_outbox_backlog`).
const BACKLOG_INTERVAL: Duration = Duration::from_secs(5);
/// Between attempts to publish a batch while the broker refuses it.
const RELAY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

/// Adds `event` for `order_id` to the outbox inside the caller's
/// transaction, and returns it as its consumers will see it (its event id
/// and time are set here).
pub async fn enqueue(
    conn: &mut PgConnection,
    producer: &str,
    order_id: OrderId,
    event: &Event,
) -> sqlx::Result<Incoming> {
    let sent = envelope::stamp(producer, order_id, event.clone());
    let envelope = sent.envelope();
    sqlx::query!(
        "WITH row AS (INSERT INTO outbox (topic, message_key, payload, trace_context) \
         VALUES ($1, $2, $3, $4)) SELECT pg_notify($5, '') AS notified",
        event.topic(),
        order_id.to_string(),
        envelope.encode_to_vec(),
        // The span writing the event: the relay publishes it as this span's
        // child, however much later that is.
        TraceContext::current().to_json(),
        CHANNEL,
    )
    .execute(conn)
    .await?;
    Ok(sent)
}

/// The span of publishing one row, a child of the span that wrote it; none
/// for a row written without tracing, which would otherwise start a trace
/// of its own per event.
fn publish_span(
    topic: &str,
    key: &str,
    trace_context: Option<&serde_json::Value>,
) -> Option<tracing::Span> {
    let parent = TraceContext::from_json(trace_context);
    if parent.is_empty() {
        return None;
    }
    let span = tracing::info_span!(
        "message.publish",
        otel.name = %format_args!("{topic} publish"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "publish",
        messaging.destination.name = topic,
        order_id = key,
    );
    parent.adopt(&span);
    Some(span)
}

/// The Kafka headers carrying `span`'s trace context to the consumer.
fn trace_headers(span: &tracing::Span) -> OwnedHeaders {
    TraceContext::of(span)
        .pairs()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        })
}

/// Publishes outbox rows to Kafka and deletes them once acknowledged.
pub struct OutboxRelay {
    pool: PgPool,
    producer: FutureProducer,
    /// Put before each row's topic (`KAFKA_TOPIC_PREFIX`).
    topic_prefix: String,
    batch_size: i64,
    /// Polled even without a notification, in case one was missed while
    /// the listening connection was down.
    poll_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("publishing to {topic}: {reason}")]
    Publish { topic: String, reason: String },
}

impl OutboxRelay {
    /// A relay publishing to the topics the rows name, with `topic_prefix`
    /// before each (see `KAFKA_TOPIC_PREFIX`).
    pub fn new(pool: PgPool, producer: FutureProducer, topic_prefix: &str) -> Self {
        Self {
            pool,
            producer,
            topic_prefix: topic_prefix.to_owned(),
            batch_size: 256,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// Relays until `shutdown`; a batch under way is finished first. Fails
    /// only when the producer has failed fatally: it never recovers, so the
    /// process must stop (and be restarted) rather than stall every saga.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut listener = self.listen().await;
        let mut failures = 0;
        let mut backlog_counted: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            // Between batches, and at least every poll interval when idle.
            if backlog_counted.is_none_or(|at| at.elapsed() >= BACKLOG_INTERVAL) {
                self.count_backlog().await;
                backlog_counted = Some(Instant::now());
            }
            match self.publish_batch().await {
                Ok(published) if published as i64 == self.batch_size => continue,
                Ok(_) => failures = 0,
                Err(error) => {
                    if let Some((code, reason)) = self.producer.client().fatal_error() {
                        anyhow::bail!("Kafka producer failed fatally ({code:?}): {reason}");
                    }
                    failures += 1;
                    let backoff = RELAY_BACKOFF.delay(failures);
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.poll_interval) => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                }
                woke = notified => {
                    if let Err(error) = woke {
                        tracing::warn!(%error, "outbox listener lost; reconnecting");
                        listener = self.listen().await;
                    }
                }
            }
        }
        Ok(())
    }

    async fn listen(&self) -> Option<PgListener> {
        let connected = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for outbox rows; polling only");
                None
            }
        }
    }

    /// Publishes the number of rows waiting. A failure only leaves the
    /// gauge at its last value: the relay's own errors are logged elsewhere.
    async fn count_backlog(&self) {
        match sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox"#)
            .fetch_one(&self.pool)
            .await
        {
            Ok(rows) => metrics::gauge!(crate::OUTBOX_BACKLOG).set(rows as f64),
            Err(error) => tracing::debug!(%error, "outbox backlog not counted"),
        }
    }

    /// Publishes up to one batch; returns how many rows it published.
    async fn publish_batch(&self) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SELECT pg_advisory_xact_lock($1) AS locked", RELAY_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query!(
            "SELECT id, topic, message_key, payload, trace_context FROM outbox \
             ORDER BY id LIMIT $1",
            self.batch_size,
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Hand the whole batch to the producer before awaiting any delivery:
        // the idempotent producer keeps per-partition order, and the batch
        // costs one round trip instead of one per row.
        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let topic = format!("{}{}", self.topic_prefix, row.topic);
            let span = publish_span(&topic, &row.message_key, row.trace_context.as_ref());
            let mut record = FutureRecord::to(&topic)
                .key(&row.message_key)
                .payload(&row.payload);
            if let Some(span) = &span {
                record = record.headers(trace_headers(span));
            }
            let delivery =
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| RelayError::Publish {
                        topic: topic.clone(),
                        reason: e.to_string(),
                    })?;
            deliveries.push((topic, delivery, span));
        }
        // Each publish span ends once its delivery is acknowledged.
        for (topic, delivery, _span) in deliveries {
            let failure = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "delivery cancelled".to_owned(),
            };
            return Err(RelayError::Publish {
                topic,
                reason: failure,
            });
        }
        metrics::histogram!(crate::OUTBOX_PUBLISH_DURATION).record(started.elapsed().as_secs_f64());
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", &ids[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!(crate::OUTBOX_PUBLISHED).increment(ids.len() as u64);
        tracing::debug!(published = ids.len(), "outbox batch published");
        Ok(ids.len())
    }
}
