//! Exactly-once effects over at-least-once delivery: every event of a
//! finished checkout is delivered a second time, and nothing happens twice.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use shipshape_e2e::Shop;
use shipshape_testkit::Service;

const TOPICS: [&str; 4] = [
    "order.events",
    "inventory.events",
    "payment.events",
    "shipping.events",
];

/// A message as it was published: topic, key, payload.
type Published = (String, Vec<u8>, Vec<u8>);

/// Every message on `topics` (their names on the broker), in partition order.
fn read_all(brokers: &str, topics: &[String]) -> anyhow::Result<Vec<Published>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-reader")
        .set("enable.auto.commit", "false")
        .set("enable.metrics.push", "false")
        .create()?;
    let timeout = Duration::from_secs(5);
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0;
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
            expected += (high - low) as usize;
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut messages = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while messages.len() < expected && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let m = message?;
            messages.push((
                m.topic().to_owned(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    anyhow::ensure!(
        messages.len() == expected,
        "read {} of {expected} messages",
        messages.len()
    );
    Ok(messages)
}

#[tokio::test]
async fn every_event_delivered_twice_has_its_effect_once() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let confirmed = shop.place(&[("SKU-0008", 3)], "tok_visa", "DE").await?;
    let refunded = shop.place(&[("SKU-0009", 2)], "tok_visa", "AQ").await?;
    for id in [&confirmed, &refunded] {
        shop.wait_terminal(id, Duration::from_secs(30)).await?;
    }
    shop.wait_quiet(Duration::from_secs(30)).await?;

    let brokers = shop.stack.broker_address();
    let topics: Vec<String> = TOPICS.iter().map(|t| shop.stack.topic(t)).collect();
    let messages = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || read_all(&brokers, &topics)
    })
    .await??;
    assert!(
        messages.len() >= 12,
        "a checkout publishes at least a dozen events, got {}",
        messages.len()
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.metrics.push", "false")
        .create()?;
    for (topic, key, payload) in &messages {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    shop.wait_quiet(Duration::from_secs(30)).await?;

    assert_eq!(shop.available("SKU-0008").await?, 497, "stock taken once");
    assert_eq!(
        shop.available("SKU-0009").await?,
        500,
        "stock returned once"
    );
    let confirmed_effects = shop.effects(&confirmed).await?;
    assert_eq!(
        (confirmed_effects.captures, confirmed_effects.refunds),
        (1, 0)
    );
    let refunded_effects = shop.effects(&refunded).await?;
    assert_eq!(
        (refunded_effects.captures, refunded_effects.refunds),
        (1, 1)
    );
    let shipments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM shipments WHERE status = 'SCHEDULED'")
            .fetch_one(shop.db(Service::Shipping))
            .await?;
    assert_eq!(shipments, 1);
    let dead_letter_topic = [shop.stack.topic("dead-letters")];
    let dead_letters =
        tokio::task::spawn_blocking(move || read_all(&brokers, &dead_letter_topic)).await??;
    assert!(
        dead_letters.is_empty(),
        "no handler may fail on a redelivery: {} dead letters",
        dead_letters.len()
    );
    assert_eq!(shop.violations().await?, Vec::<String>::new());
    Ok(())
}
