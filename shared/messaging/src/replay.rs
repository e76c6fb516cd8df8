//! Reading topics again from their beginning, to rebuild a read model from
//! the events that made it.
//!
//! A replay joins no consumer group and commits nothing: it assigns itself
//! every partition of the topics, notes where each ends when it starts, and
//! reads each up to there. The services' groups and their offsets are left
//! alone, and the principal needs only `READ` on the topics (and on its own
//! group, which it has).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use shipshape_telemetry::TraceContext;

use crate::envelope::{self, Incoming};
use crate::kafka::KafkaSettings;

/// The most events handed to the caller at once.
const BATCH: usize = 500;
/// For each metadata and watermark request.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// One event read back, with the trace context it was published in.
#[derive(Clone, Debug)]
pub struct Replayed {
    pub incoming: Incoming,
    pub trace: TraceContext,
}

/// What a replay read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayCount {
    /// Messages read, up to where each partition ended when the replay began.
    pub messages: u64,
    /// Of those, the ones not handed over: not an envelope, or an event on a
    /// topic that is not its own (the consumers dead-lettered them).
    pub skipped: u64,
}

/// Reads `topics` (named without the prefix) from their beginning to where
/// they end now, and hands their events to `apply` in batches, in each
/// partition's order. Fails if the broker cannot be read, if `apply` fails,
/// or if the end is not reached within `limit`.
pub async fn replay<F, Fut>(
    settings: &KafkaSettings,
    topics: &[&str],
    limit: Duration,
    mut apply: F,
) -> anyhow::Result<ReplayCount>
where
    F: FnMut(Vec<Replayed>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let consumer: Arc<StreamConsumer> = Arc::new(
        settings
            .connection
            .client_config()
            // librdkafka assigns partitions only to a consumer with a group
            // id. The service's own is one it may use; the replay never
            // joins the group, and fetches and commits no offsets.
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Should the beginning be gone by the time it is fetched
            // (retention), start at what is left, not at the end.
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .create()
            .context("creating the replay consumer")?,
    );
    let names: Vec<String> = topics.iter().map(|t| settings.topic(t)).collect();
    let ends = {
        let consumer = Arc::clone(&consumer);
        tokio::task::spawn_blocking(move || ends(consumer.as_ref(), &names))
            .await
            .context("the watermark lookup panicked")??
    };
    let mut unfinished = ends;
    let mut assignment = TopicPartitionList::new();
    for (topic, partition) in unfinished.keys() {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .context("assigning the partitions to replay")?;
    }
    consumer
        .assign(&assignment)
        .context("assigning the partitions to replay")?;

    let mut count = ReplayCount::default();
    let mut batch = Vec::with_capacity(BATCH);
    let deadline = tokio::time::Instant::now() + limit;
    while !unfinished.is_empty() {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the replay did not reach the end of {} partition(s) within {limit:?}",
                    unfinished.len()
                )
            })?
            .context("reading the topics to replay")?;
        let key = (message.topic().to_owned(), message.partition());
        let Some(&end) = unfinished.get(&key) else {
            continue;
        };
        if message.offset() >= end {
            continue;
        }
        if message.offset() + 1 >= end {
            unfinished.remove(&key);
        }
        count.messages += 1;
        let topic = settings.unprefixed(message.topic());
        let opened = message
            .payload()
            .ok_or_else(|| "no payload".to_owned())
            .and_then(|bytes| envelope::open(bytes).map_err(|e| e.to_string()))
            .and_then(|incoming| envelope::check_provenance(&incoming, topic).map(|()| incoming));
        let incoming = match opened {
            Ok(incoming) => incoming,
            Err(reason) => {
                count.skipped += 1;
                tracing::debug!(topic, offset = message.offset(), %reason, "replay skipped a message");
                continue;
            }
        };
        let trace = message
            .headers()
            .map(|headers| {
                TraceContext::from_pairs(
                    headers
                        .iter()
                        .filter_map(|header| Some((header.key, header.value?))),
                )
            })
            .unwrap_or_default();
        batch.push(Replayed { incoming, trace });
        if batch.len() >= BATCH {
            apply(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        apply(batch).await?;
    }
    Ok(count)
}

/// A topic's partition.
type Partition = (String, i32);

/// Every partition of `topics` that holds messages, with the offset after
/// its last one (its high watermark).
fn ends(consumer: &StreamConsumer, topics: &[String]) -> anyhow::Result<HashMap<Partition, i64>> {
    let mut ends = HashMap::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), BROKER_TIMEOUT)
            .with_context(|| format!("reading the metadata of {topic}"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| {
                if let Some(error) = t.error() {
                    anyhow::bail!("{topic}: {error:?}");
                }
                Ok(t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            })
            .with_context(|| format!("the broker does not know {topic}"))??;
        for partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, BROKER_TIMEOUT)
                .with_context(|| format!("reading where {topic}/{partition} ends"))?;
            if high > low {
                ends.insert((topic.clone(), partition), high);
            }
        }
    }
    Ok(ends)
}
