//! Poison messages: what a misbehaving producer could put on a topic (any
//! bytes, no value at all, an envelope nobody knows), placed on a chosen
//! partition so a test can put one in front of every consumer.

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

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
        let brokers = self.stack.broker_address();
        let topic = self.stack.topic(topic);
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("enable.metrics.push", "false")
                .create()?;
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
    pub async fn publish_poison(&self, messages: &[Raw]) -> anyhow::Result<Vec<SourceMessage>> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.stack.broker_address())
            .set("enable.metrics.push", "false")
            .create()?;
        let mut landed = Vec::with_capacity(messages.len());
        for message in messages {
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
