//! Poison messages: what a misbehaving producer could put on a topic (any
//! bytes, no value at all, an envelope nobody knows), placed on a chosen
//! partition so a test can put one in front of every consumer.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shipshape_proto::producer_of;
use shipshape_testkit::Service;

pub use shipshape_invariants::SourceMessage;

use crate::Shop;

/// One message as published: where to, under which key, with which value
/// (`None`: a null value, a tombstone).
#[derive(Clone, Debug)]
pub struct Raw {
    /// As the services name it (`order.events`), without the stack's prefix.
    pub topic: String,
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

impl Shop {
    /// The number of partitions of `topic` (named as the services name it).
    pub async fn partitions(&self, topic: &str) -> anyhow::Result<i32> {
        let connection = self.stack.broker_admin();
        let topic = self.stack.topic(topic);
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = connection.client_config().create()?;
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map(|t| t.partitions().len())
                .with_context(|| format!("no metadata for {topic}"))?;
            anyhow::ensure!(count > 0, "{topic} has no partitions");
            Ok(i32::try_from(count)?)
        })
        .await?
    }

    /// Publishes `messages` one after the other, each acknowledged before
    /// the next is sent, and returns where each one landed (under the
    /// topic's name on the broker, with the stack's prefix). Their dead
    /// letters are expected, so [`Shop::violations`] does not report them.
    ///
    /// Each is written with the login of the service that publishes on its
    /// topic, the only principal the broker lets write there: poison comes
    /// from a service that misbehaves or whose password was stolen.
    pub async fn publish_poison(&self, messages: &[Raw]) -> anyhow::Result<Vec<SourceMessage>> {
        let mut producers: BTreeMap<Service, FutureProducer> = BTreeMap::new();
        let mut landed = Vec::with_capacity(messages.len());
        for message in messages {
            let writer = producer_of(&message.topic)
                .and_then(Service::named)
                .with_context(|| format!("no service publishes on {}", message.topic))?;
            let producer = match producers.entry(writer) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    entry.insert(self.stack.broker_login(writer)?.client_config().create()?)
                }
            };
            let topic = self.stack.topic(&message.topic);
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).partition(message.partition);
            if let Some(key) = &message.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &message.payload {
                record = record.payload(payload.as_slice());
            }
            let delivered = producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("publishing to {topic}"))?;
            let source = SourceMessage {
                topic,
                partition: delivered.partition,
                offset: delivered.offset,
            };
            self.checker.explain(source.clone());
            landed.push(source);
        }
        Ok(landed)
    }
}
