//! Broker settings and the clients built from them. Only standard Kafka
//! client features are used, so the same binaries run against Apache Kafka
//! and against Tansu in local runs and CI.

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;

use crate::consumer::GroupMembership;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use shipshape_runtime::config;
use shipshape_runtime::ops::CheckFuture;

/// Broker settings, read from the environment.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// `KAFKA_BROKERS`, comma separated (default `127.0.0.1:9092`).
    pub brokers: String,
    /// `KAFKA_GROUP_ID` (default `shipshape-<service>`).
    pub group_id: String,
    /// `KAFKA_FETCH_WAIT_MS`: how long the broker may hold a fetch (default
    /// 10). Each saga step waits up to this long, so it bounds latency.
    pub fetch_wait_ms: u64,
    /// `KAFKA_SESSION_TIMEOUT_MS` (default 6000) and a heartbeat of a sixth.
    pub session_timeout_ms: u64,
    /// `KAFKA_TOPIC_PARTITIONS` for topics this service creates (default 3).
    pub partitions: i32,
    /// `KAFKA_REPLICATION_FACTOR` for topics this service creates (default 1).
    pub replication: i32,
    /// `CONSUMER_CONCURRENCY`: event handlers running at once, across all
    /// partitions (default 4).
    pub concurrency: usize,
    /// `CONSUMER_MAX_ATTEMPTS`: failed attempts before a message is
    /// dead-lettered (default 10).
    pub max_attempts: u32,
}

impl KafkaSettings {
    pub fn from_env(service: &str) -> anyhow::Result<Self> {
        Ok(Self {
            brokers: config::string_or("KAFKA_BROKERS", "127.0.0.1:9092")?,
            group_id: config::string_or("KAFKA_GROUP_ID", &format!("shipshape-{service}"))?,
            fetch_wait_ms: config::var_or("KAFKA_FETCH_WAIT_MS", 10)?,
            session_timeout_ms: config::var_or("KAFKA_SESSION_TIMEOUT_MS", 6000)?,
            partitions: config::var_or("KAFKA_TOPIC_PARTITIONS", 3)?,
            replication: config::var_or("KAFKA_REPLICATION_FACTOR", 1)?,
            concurrency: config::var_or("CONSUMER_CONCURRENCY", 4_usize)?.max(1),
            max_attempts: config::var_or("CONSUMER_MAX_ATTEMPTS", 10_u32)?.max(1),
        })
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            // Otherwise the client keeps asking the broker for telemetry
            // subscriptions, which Tansu does not serve.
            .set("enable.metrics.push", "false");
        config
    }

    /// An idempotent producer: retries cannot duplicate or reorder messages
    /// within a partition, and `acks=all` waits for every in-sync replica.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        self.base()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "30000")
            .create()
            .context("creating the Kafka producer")
    }

    /// A group consumer that stores offsets only when told to (after the
    /// handler's transaction) and commits stored offsets every 500 ms.
    pub fn consumer(
        &self,
        membership: GroupMembership,
    ) -> anyhow::Result<StreamConsumer<GroupMembership>> {
        self.base()
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string())
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (self.session_timeout_ms / 6).max(100).to_string(),
            )
            .create_with_context(membership)
            .context("creating the Kafka consumer")
    }

    /// Creates the topics that do not exist yet, retrying while the broker
    /// is unreachable.
    pub async fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .base()
            .create()
            .context("creating the Kafka admin client")?;
        let new_topics: Vec<NewTopic> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            match admin.create_topics(&new_topics, &options).await {
                Ok(results) => {
                    for result in results {
                        match result {
                            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
                        }
                    }
                    return Ok(());
                }
                Err(error) if attempt < 30 => {
                    tracing::warn!(%error, attempt, "broker not ready for topic creation");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(error).context("creating topics"),
            }
        }
        unreachable!("the retry loop returns")
    }

    /// A readiness check: the broker answers a metadata request within a
    /// second. Uses `producer`'s connections.
    pub fn check(producer: FutureProducer) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
        move || {
            let producer = producer.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    if let Some((code, reason)) = producer.client().fatal_error() {
                        return Err(format!("producer failed fatally ({code:?}): {reason}"));
                    }
                    producer
                        .client()
                        .fetch_metadata(None, Duration::from_secs(1))
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?
            })
        }
    }
}

/// A service's connection to the broker: its settings and one producer,
/// shared by the outbox relay, the dead-letter path and readiness checks.
#[derive(Clone)]
pub struct Broker {
    pub settings: KafkaSettings,
    pub producer: FutureProducer,
}

impl Broker {
    /// Creates `topics` (and the dead-letter topic) if missing and the producer.
    pub async fn connect(settings: KafkaSettings, topics: &[&str]) -> anyhow::Result<Self> {
        let mut all: Vec<&str> = topics.to_vec();
        all.push(crate::DEAD_LETTER_TOPIC);
        settings.ensure_topics(&all).await?;
        let producer = settings.producer()?;
        Ok(Self { settings, producer })
    }

    pub fn relay(&self, pool: sqlx::PgPool) -> crate::OutboxRelay {
        crate::OutboxRelay::new(pool, self.producer.clone())
    }

    pub fn consumer<H: crate::Handler>(
        &self,
        topics: Vec<&'static str>,
        handler: H,
    ) -> crate::ConsumerLoop<H> {
        crate::ConsumerLoop::new(
            self.settings.clone(),
            topics,
            handler,
            self.producer.clone(),
        )
    }

    pub fn check(&self) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
        KafkaSettings::check(self.producer.clone())
    }
}
