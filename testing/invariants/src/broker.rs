//! What the broker says: consumer lag per group and partition, and the
//! dead-letter topic. Reading is blocking (rdkafka's `BaseConsumer`), so it
//! runs on the blocking pool; judging is plain functions of what was read.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;
use shipshape_kafka::Connection;
use uuid::Uuid;

use crate::report::{Violation, ViolationKind};
use crate::{Error, Result};

/// Where the services put messages they cannot handle.
pub const DEAD_LETTER_TOPIC: &str = "dead-letters";

/// Which consumer group reads which topics, as the services subscribe.
pub const SUBSCRIPTIONS: &[(&str, &[&str])] = &[
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

/// How long one metadata, offsets or watermarks request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long reading the whole dead-letter topic may take.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A message a consumer could not handle, as the dead-letter topic holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Where it sits on the dead-letter topic.
    pub partition: i32,
    pub offset: i64,
    /// The source message's key: the order id for every real event.
    pub key: Option<String>,
    /// `dlq.source.topic`, `dlq.source.partition`, `dlq.source.offset`,
    /// `dlq.consumer.group`, `dlq.error`.
    pub headers: BTreeMap<String, String>,
}

impl DeadLetter {
    /// The message it was made from, when the headers say so.
    pub fn source(&self) -> Option<SourceMessage> {
        Some(SourceMessage {
            topic: self.headers.get("dlq.source.topic")?.clone(),
            partition: self.headers.get("dlq.source.partition")?.parse().ok()?,
            offset: self.headers.get("dlq.source.offset")?.parse().ok()?,
        })
    }
}

/// A message on a service topic, named by where it sits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SourceMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One partition a consumer group reads: its committed offset and the
/// partition's watermarks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupPosition {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// `None` when the group never committed on this partition.
    pub committed: Option<i64>,
    pub low: i64,
    pub high: i64,
}

/// Every partition a group has not read to its end. A group with no
/// committed offset starts at the low watermark (the services read from the
/// earliest message), so only messages still on the partition count.
pub(crate) fn lag(positions: &[GroupPosition]) -> Vec<Violation> {
    positions
        .iter()
        .filter_map(|p| {
            let done = p.committed.unwrap_or(p.low).max(p.low);
            (done < p.high).then(|| {
                Violation::global(
                    ViolationKind::EventsUnprocessed {
                        group: p.group.clone(),
                        topic: p.topic.clone(),
                        partition: p.partition,
                    },
                    format!(
                        "{} messages not committed (committed {}, end {})",
                        p.high - done,
                        p.committed
                            .map_or_else(|| "nothing".to_owned(), |o| o.to_string()),
                        p.high
                    ),
                )
            })
        })
        .collect()
}

/// Every dead letter nobody explained: neither its source message is in
/// `explained` nor does `accepted` hold for it.
pub(crate) fn unexplained(
    letters: &[DeadLetter],
    explained: &HashSet<SourceMessage>,
    accepted: &dyn Fn(&DeadLetter) -> bool,
) -> Vec<Violation> {
    letters
        .iter()
        .filter(|letter| !letter.source().is_some_and(|s| explained.contains(&s)))
        .filter(|letter| !accepted(letter))
        .map(|letter| {
            let header = |name: &str| letter.headers.get(name).map_or("?", String::as_str);
            Violation {
                order_id: letter.key.as_deref().and_then(|k| k.parse::<Uuid>().ok()),
                kind: ViolationKind::DeadLetters,
                detail: format!(
                    "{}[{}]@{} dead-lettered by {}: {}",
                    header("dlq.source.topic"),
                    header("dlq.source.partition"),
                    header("dlq.source.offset"),
                    header("dlq.consumer.group"),
                    header("dlq.error"),
                ),
            }
        })
        .collect()
}

/// Reads the broker `connection` reaches (logged in as its principal),
/// where every topic and group name of the services starts with `prefix`.
pub(crate) struct Broker {
    connection: Connection,
    prefix: String,
}

impl Broker {
    pub fn new(connection: Connection, prefix: String) -> Self {
        Self { connection, prefix }
    }

    fn failed(&self, context: &str) -> impl FnOnce(KafkaError) -> Error {
        let (brokers, context) = (self.connection.brokers.clone(), context.to_owned());
        move |source| Error::Broker {
            brokers,
            context,
            source: Box::new(source),
        }
    }

    /// A consumer in `group` that never commits: reading offsets and
    /// watermarks must not move any group.
    fn consumer(&self, group: &str) -> Result<BaseConsumer> {
        self.connection
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(self.failed("creating a consumer"))
    }

    /// The partitions of `topic` (none when it does not exist yet).
    fn partitions(&self, consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(self.failed(&format!("reading the metadata of {topic}")))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect())
    }

    /// Where each group stands on each partition it reads.
    pub async fn positions(self: &std::sync::Arc<Self>) -> Result<Vec<GroupPosition>> {
        let this = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || this.positions_blocking()).await?
    }

    fn positions_blocking(&self) -> Result<Vec<GroupPosition>> {
        let mut positions = Vec::new();
        for (group, topics) in SUBSCRIPTIONS {
            let group = format!("{}{group}", self.prefix);
            let consumer = self.consumer(&group)?;
            let mut partitions = TopicPartitionList::new();
            for topic in *topics {
                let topic = format!("{}{topic}", self.prefix);
                for partition in self.partitions(&consumer, &topic)? {
                    partitions.add_partition(&topic, partition);
                }
            }
            let committed = consumer
                .committed_offsets(partitions, REQUEST_TIMEOUT)
                .map_err(self.failed(&format!("reading the offsets of {group}")))?;
            for element in committed.elements() {
                let (low, high) = consumer
                    .fetch_watermarks(element.topic(), element.partition(), REQUEST_TIMEOUT)
                    .map_err(self.failed(&format!("reading the end of {}", element.topic())))?;
                positions.push(GroupPosition {
                    group: group.clone(),
                    topic: element.topic().to_owned(),
                    partition: element.partition(),
                    committed: match element.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    },
                    low,
                    high,
                });
            }
        }
        Ok(positions)
    }

    /// Every message on the dead-letter topic.
    pub async fn dead_letters(self: &std::sync::Arc<Self>) -> Result<Vec<DeadLetter>> {
        let this = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || this.dead_letters_blocking()).await?
    }

    fn dead_letters_blocking(&self) -> Result<Vec<DeadLetter>> {
        // A group of its own, so that no real group's offsets move.
        let consumer = self.consumer(&format!("shipshape-check-{}", Uuid::new_v4()))?;
        let dead_letters = format!("{}{DEAD_LETTER_TOPIC}", self.prefix);
        let mut assignment = TopicPartitionList::new();
        let mut remaining = 0;
        for partition in self.partitions(&consumer, &dead_letters)? {
            let (low, high) = consumer
                .fetch_watermarks(&dead_letters, partition, REQUEST_TIMEOUT)
                .map_err(self.failed("reading the end of the dead-letter topic"))?;
            remaining += high - low;
            assignment
                .add_partition_offset(&dead_letters, partition, Offset::Beginning)
                .map_err(self.failed("assigning the dead-letter topic"))?;
        }
        if remaining == 0 {
            return Ok(Vec::new());
        }
        consumer
            .assign(&assignment)
            .map_err(self.failed("assigning the dead-letter topic"))?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut letters = Vec::new();
        while remaining > 0 && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.map_err(self.failed("reading the dead-letter topic"))?;
            let mut headers = BTreeMap::new();
            for header in message.headers().into_iter().flat_map(|h| h.iter()) {
                let value = header
                    .value
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                headers.insert(header.key.to_owned(), value.into_owned());
            }
            letters.push(DeadLetter {
                partition: message.partition(),
                offset: message.offset(),
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                headers,
            });
            remaining -= 1;
        }
        if remaining > 0 {
            return Err(Error::Incomplete {
                brokers: self.connection.brokers.clone(),
                context: format!("{remaining} dead letters could not be read in {READ_TIMEOUT:?}"),
            });
        }
        Ok(letters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(committed: Option<i64>, low: i64, high: i64) -> GroupPosition {
        GroupPosition {
            group: "shipshape-payment".into(),
            topic: "order.events".into(),
            partition: 3,
            committed,
            low,
            high,
        }
    }

    #[test]
    fn a_group_behind_the_end_of_a_partition_is_reported() {
        let found = lag(&[position(Some(7), 0, 10)]);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].kind,
            ViolationKind::EventsUnprocessed {
                group: "shipshape-payment".into(),
                topic: "order.events".into(),
                partition: 3,
            }
        );
        assert!(found[0].detail.starts_with("3 messages"), "{}", found[0]);
    }

    #[test]
    fn a_group_at_the_end_or_on_an_empty_partition_is_not() {
        assert_eq!(lag(&[position(Some(10), 0, 10)]), []);
        assert_eq!(lag(&[position(None, 0, 0)]), []);
        // Messages gone below the low watermark cannot be processed any more.
        assert_eq!(lag(&[position(None, 5, 5)]), []);
    }

    #[test]
    fn a_group_that_never_committed_lags_by_every_message_there() {
        let found = lag(&[position(None, 2, 6)]);
        assert_eq!(found.len(), 1);
        assert!(found[0].detail.starts_with("4 messages"), "{}", found[0]);
    }

    fn letter(key: &str, source_offset: i64) -> DeadLetter {
        let headers = [
            ("dlq.source.topic", "order.events".to_owned()),
            ("dlq.source.partition", "0".to_owned()),
            ("dlq.source.offset", source_offset.to_string()),
            ("dlq.consumer.group", "shipshape-payment".to_owned()),
            ("dlq.error", "not an event envelope".to_owned()),
        ];
        DeadLetter {
            partition: 0,
            offset: source_offset,
            key: Some(key.to_owned()),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    #[test]
    fn every_unexplained_dead_letter_is_reported_with_its_order() {
        let order = Uuid::new_v4();
        let letters = [letter(&order.to_string(), 4), letter("garbage", 5)];
        let found = unexplained(&letters, &HashSet::new(), &|_| false);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].order_id, Some(order));
        assert_eq!(found[0].kind, ViolationKind::DeadLetters);
        assert!(found[0].detail.contains("not an event envelope"));
        assert_eq!(found[1].order_id, None);
    }

    #[test]
    fn explained_dead_letters_are_not_reported() {
        let letters = [letter("garbage", 4), letter("noise", 5), letter("x", 6)];
        let explained = HashSet::from([SourceMessage {
            topic: "order.events".into(),
            partition: 0,
            offset: 4,
        }]);
        let found = unexplained(&letters, &explained, &|l| l.key.as_deref() == Some("noise"));
        assert_eq!(found.len(), 1);
        assert!(found[0].detail.contains("@6"), "{}", found[0]);
    }
}
