//! Broker settings and the clients built from them.

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::{FutureProducer, Producer};
use shipshape_kafka::{Connection, TopicLayout, grants};
use shipshape_runtime::config;
use shipshape_runtime::ops::CheckFuture;

use crate::consumer::GroupMembership;

/// Which consumer-group protocol a consumer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupProtocol {
    /// The protocol of every Kafka release: the group's members rebalance
    /// together, and the client holds the session timeout.
    Classic,
    /// Kafka 4's protocol (KIP-848): the broker assigns partitions
    /// incrementally and holds the session and heartbeat settings.
    Consumer,
}

impl GroupProtocol {
    fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            other => Err(format!("`{other}` is neither `classic` nor `consumer`")),
        }
    }
}

impl std::fmt::Display for GroupProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The partition count of the topics a service creates when
/// `KAFKA_TOPIC_PARTITIONS` is not set.
pub const DEFAULT_PARTITIONS: i32 = 3;

/// Broker settings, read from the environment.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// `KAFKA_BROKERS` (comma separated, default `127.0.0.1:9092`) and the
    /// login: see [`Connection::from_env`].
    pub connection: Connection,
    /// `KAFKA_TOPIC_PREFIX` (default empty): put before every topic name
    /// and the default group id, so several stacks can share one broker
    /// (the test suite does) without seeing each other's events.
    pub topic_prefix: String,
    /// `KAFKA_GROUP_ID` (default `<prefix>shipshape-<service>`).
    pub group_id: String,
    /// `KAFKA_GROUP_PROTOCOL`: `classic` (default) or `consumer`.
    pub group_protocol: GroupProtocol,
    /// `KAFKA_FETCH_WAIT_MS`: how long the broker may hold a fetch that
    /// finds nothing new (default 500). Kafka answers a held fetch as soon
    /// as a message arrives, so in the steady state this costs no latency;
    /// shorter only makes idle consumers ask more often (10, the old
    /// default, had the broker answer 100 empty fetches a second per
    /// consumer). librdkafka keeps one fetch in flight per broker, so a
    /// partition resumed or newly assigned while the others are idle may
    /// wait up to this long for its first fetch.
    pub fetch_wait_ms: u64,
    /// `KAFKA_FETCH_MIN_BYTES`: how much a fetch waits for (up to
    /// `fetch_wait_ms`) before the broker answers it (default 1: the first
    /// message). More makes a busy consumer fetch less often, each fetch
    /// bringing more, at the price of waiting when traffic is light.
    pub fetch_min_bytes: u32,
    /// `KAFKA_LINGER_MS`: how long the producer waits for more messages to
    /// send in one request (default 0: at once).
    pub linger_ms: u64,
    /// `KAFKA_SESSION_TIMEOUT_MS` (default 6000) and a heartbeat of a sixth;
    /// with the consumer protocol the broker holds both instead.
    pub session_timeout_ms: u64,
    /// `KAFKA_TOPIC_PARTITIONS` for topics this service creates (default
    /// [`DEFAULT_PARTITIONS`]).
    pub partitions: i32,
    /// `KAFKA_REPLICATION_FACTOR` for topics this service creates (default 1).
    pub replication: i32,
    /// `CONSUMER_CONCURRENCY`: event handlers running at once, across all
    /// partitions (default 4).
    pub concurrency: usize,
    /// `CONSUMER_MAX_ATTEMPTS`: failed attempts before a message is
    /// dead-lettered (default 10).
    pub max_attempts: u32,
    /// `CONSUMER_MAX_BATCH`: the most of a partition's events handled in
    /// one transaction (default [`DEFAULT_MAX_BATCH`]; 1 handles each on
    /// its own). A batch is what has arrived: nothing waits for one to fill.
    pub max_batch: usize,
}

/// The default of `CONSUMER_MAX_BATCH`: half the backlog at which a
/// partition pauses, so a paused partition drains in a few batches.
pub const DEFAULT_MAX_BATCH: usize = 32;

impl KafkaSettings {
    pub fn from_env(service: &str) -> anyhow::Result<Self> {
        let topic_prefix = config::string_or("KAFKA_TOPIC_PREFIX", "")?;
        check_topic_prefix(&topic_prefix).context("KAFKA_TOPIC_PREFIX")?;
        Ok(Self {
            connection: Connection::from_env()?,
            group_id: config::string_or(
                "KAFKA_GROUP_ID",
                &grants::group_id(&topic_prefix, service),
            )?,
            topic_prefix,
            group_protocol: config::var_or("KAFKA_GROUP_PROTOCOL", GroupProtocol::Classic)?,
            fetch_wait_ms: config::var_or("KAFKA_FETCH_WAIT_MS", 500)?,
            fetch_min_bytes: config::var_or("KAFKA_FETCH_MIN_BYTES", 1_u32)?.max(1),
            linger_ms: config::var_or("KAFKA_LINGER_MS", 0)?,
            session_timeout_ms: config::var_or("KAFKA_SESSION_TIMEOUT_MS", 6000)?,
            partitions: config::var_or("KAFKA_TOPIC_PARTITIONS", DEFAULT_PARTITIONS)?,
            replication: config::var_or("KAFKA_REPLICATION_FACTOR", 1)?,
            concurrency: config::var_or("CONSUMER_CONCURRENCY", 4_usize)?.max(1),
            max_attempts: config::var_or("CONSUMER_MAX_ATTEMPTS", 10_u32)?.max(1),
            max_batch: config::var_or("CONSUMER_MAX_BATCH", DEFAULT_MAX_BATCH)?.max(1),
        })
    }

    /// The name topic `name` has on the broker: with the prefix.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// `topic` without this process's prefix: the name the code knows it by.
    pub fn unprefixed<'a>(&self, topic: &'a str) -> &'a str {
        topic.strip_prefix(&self.topic_prefix).unwrap_or(topic)
    }

    fn base(&self) -> ClientConfig {
        self.connection.client_config()
    }

    /// An idempotent producer: retries cannot duplicate or reorder messages
    /// within a partition, and `acks=all` waits for every in-sync replica.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        self.base()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger_ms.to_string())
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
        self.consumer_config()
            .create_with_context(membership)
            .context("creating the Kafka consumer")
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", &self.group_id)
            .set("group.protocol", self.group_protocol.name())
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string())
            .set("fetch.min.bytes", self.fetch_min_bytes.to_string());
        if self.group_protocol == GroupProtocol::Classic {
            // The consumer protocol refuses these: its broker holds them.
            config
                .set("session.timeout.ms", self.session_timeout_ms.to_string())
                .set(
                    "heartbeat.interval.ms",
                    (self.session_timeout_ms / 6).max(100).to_string(),
                );
        }
        config
    }

    /// Makes sure `topics` exist (see [`shipshape_kafka::topics::ensure`]):
    /// on a secured broker the setup created them, on an open one this
    /// creates them.
    pub async fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        let names: Vec<String> = topics.iter().map(|t| self.topic(t)).collect();
        let layout = TopicLayout {
            partitions: self.partitions,
            replication: self.replication,
        };
        shipshape_kafka::topics::ensure(&self.connection, &names, layout).await
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

/// Fails unless `prefix` is made of the characters Kafka allows in topic
/// names (ASCII letters, digits, `.`, `_`, `-`) and leaves room for ours.
fn check_topic_prefix(prefix: &str) -> anyhow::Result<()> {
    // Kafka's limit is 249 characters; the longest topic of ours is 16.
    const MAX_LEN: usize = 200;
    if let Some(bad) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        anyhow::bail!(
            "{prefix:?} holds {bad:?}; topic names allow only ASCII letters, digits, `.`, `_` and `-`"
        );
    }
    if prefix.len() > MAX_LEN {
        anyhow::bail!(
            "{} characters is longer than the {MAX_LEN} allowed",
            prefix.len()
        );
    }
    Ok(())
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
        crate::OutboxRelay::new(pool, self.producer.clone(), &self.settings.topic_prefix)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_prefixes_are_checked_for_what_kafka_allows() {
        for good in ["", "shipshape_t1a2b3c4d.", "team-a.v2_"] {
            check_topic_prefix(good).expect(good);
        }
        for bad in ["with space.", "slash/", "ünicode.", &"x".repeat(201)] {
            let error = check_topic_prefix(bad).expect_err(bad).to_string();
            assert!(
                error.contains("allow") || error.contains("longer"),
                "{error}"
            );
        }
    }

    #[test]
    fn group_protocols_parse_from_their_names_and_nothing_else() {
        for protocol in [GroupProtocol::Classic, GroupProtocol::Consumer] {
            assert_eq!(protocol.to_string().parse::<GroupProtocol>(), Ok(protocol));
        }
        let error = "eager"
            .parse::<GroupProtocol>()
            .expect_err("not a protocol");
        assert!(error.contains("`eager`"), "{error}");
    }

    // A runtime: the stream consumer starts a task on it.
    #[tokio::test]
    async fn only_the_classic_protocol_sets_client_side_session_timeouts() {
        let settings = |group_protocol| KafkaSettings {
            connection: Connection::plaintext("127.0.0.1:9"),
            topic_prefix: String::new(),
            group_id: "g".to_owned(),
            group_protocol,
            fetch_wait_ms: 10,
            fetch_min_bytes: 1,
            linger_ms: 0,
            session_timeout_ms: 6000,
            partitions: DEFAULT_PARTITIONS,
            replication: 1,
            concurrency: 1,
            max_attempts: 1,
            max_batch: 1,
        };
        let classic = settings(GroupProtocol::Classic).consumer_config();
        assert_eq!(classic.get("group.protocol"), Some("classic"));
        assert_eq!(classic.get("heartbeat.interval.ms"), Some("1000"));
        let consumer = settings(GroupProtocol::Consumer);
        assert_eq!(consumer.consumer_config().get("session.timeout.ms"), None);
        let _consumer = consumer
            .consumer(GroupMembership::default())
            .expect("a KIP-848 consumer: librdkafka refuses session timeouts with it");
    }
}
