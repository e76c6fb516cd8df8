//! Consumer lag: how far the group's committed offset of each assigned
//! partition trails its high watermark, published as a gauge.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use tokio_util::sync::CancellationToken;

use super::GroupConsumer;

/// How often the lag of every assigned partition is published.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Publishes `shipshape_consumer_lag{topic,partition}` for every partition
/// assigned to this member, every [`LAG_INTERVAL`] until `stop`. It counts
/// from the committed offset, as `kafka-consumer-groups` does: what this
/// member has not yet handled or not yet committed (commits follow within
/// `auto.commit.interval.ms`). The broker round trips block, so they run off
/// the async runtime.
pub(super) async fn report_lag(consumer: Arc<GroupConsumer>, stop: CancellationToken) {
    let mut reported: HashSet<(String, i32)> = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LAG_INTERVAL) => {}
        }
        let sampling = consumer.clone();
        let lags = match tokio::task::spawn_blocking(move || partition_lags(&sampling)).await {
            Ok(Ok(lags)) => lags,
            Ok(Err(error)) => {
                tracing::debug!(%error, "consumer lag not sampled");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "consumer lag sampling panicked");
                continue;
            }
        };
        let assigned: HashSet<(String, i32)> = lags
            .iter()
            .map(|(topic, partition, _)| (topic.clone(), *partition))
            .collect();
        // A partition taken away is its new owner's to report; left as it
        // was, this member's last figure would be summed with the owner's.
        for (topic, partition) in reported.difference(&assigned) {
            lag_gauge(topic, *partition).set(0.0);
        }
        for (topic, partition, lag) in lags {
            lag_gauge(&topic, partition).set(lag as f64);
        }
        reported = assigned;
    }
}

fn lag_gauge(topic: &str, partition: i32) -> metrics::Gauge {
    metrics::gauge!(
        crate::CONSUMER_LAG,
        "topic" => topic.to_owned(),
        "partition" => partition.to_string()
    )
}

/// `(topic, partition, lag)` of every assigned partition: its high
/// watermark minus the group's committed offset, or minus its low watermark
/// while nothing is committed (the group then starts from the earliest).
fn partition_lags(consumer: &GroupConsumer) -> KafkaResult<Vec<(String, i32, i64)>> {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let committed = consumer.committed(TIMEOUT)?;
    let mut lags = Vec::with_capacity(committed.count());
    for element in committed.elements() {
        let (low, high) =
            consumer.fetch_watermarks(element.topic(), element.partition(), TIMEOUT)?;
        let done = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        lags.push((
            element.topic().to_owned(),
            element.partition(),
            (high - done).max(0),
        ));
    }
    Ok(lags)
}
