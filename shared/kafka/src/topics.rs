//! Topics: created where missing, then waited for until the broker's
//! metadata shows every partition with a leader.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use shipshape_runtime::Backoff;

use crate::Connection;

/// Between attempts while the broker is starting, or while grants made a
/// moment ago reach its authorizer.
const CREATION_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
/// Attempts before giving up: with the jittered waits above, about a
/// minute.
const CREATION_ATTEMPTS: u32 = 60;
/// How long a created topic has to appear in the broker's metadata.
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);

/// How topics are created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicLayout {
    pub partitions: i32,
    pub replication: i32,
}

/// Makes sure every topic in `names` exists. Those the broker's metadata
/// does not show are created, which needs the right to create topics (the
/// setup's admin has it, a service on a secured broker has not); a refusal
/// is retried for about a minute, as the setup may not have run yet or its
/// grants may still be on their way. Then waits until each topic is visible
/// with a leader for every partition: the controller acknowledges a new
/// topic before the broker's metadata has it, and a consumer that
/// subscribes in that moment leaves the topic out of its assignment until
/// its next metadata refresh, minutes later.
pub async fn ensure(
    connection: &Connection,
    names: &[String],
    layout: TopicLayout,
) -> anyhow::Result<()> {
    // Made only once a topic is missing: on a secured broker the setup has
    // made them all, and a service never needs it.
    let mut admin: Option<AdminClient<DefaultClientContext>> = None;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let who = connection.username().unwrap_or("an anonymous client");
    for attempt in 1.. {
        let missing = not_led(connection.client_config(), names.to_vec(), Duration::ZERO).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let new_topics: Vec<NewTopic> = missing
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    layout.partitions,
                    TopicReplication::Fixed(layout.replication),
                )
            })
            .collect();
        let admin = match &mut admin {
            Some(admin) => admin,
            None => admin.insert(
                connection
                    .client_config()
                    .create()
                    .context("creating the Kafka admin client")?,
            ),
        };
        let failure = match admin.create_topics(&new_topics, &options).await {
            Ok(results) => {
                let mut refused = Vec::new();
                for result in results {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((topic, RDKafkaErrorCode::TopicAuthorizationFailed))
                        | Err((topic, RDKafkaErrorCode::ClusterAuthorizationFailed)) => {
                            refused.push(topic)
                        }
                        Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
                    }
                }
                if refused.is_empty() {
                    let still =
                        not_led(connection.client_config(), names.to_vec(), VISIBLE_WITHIN).await?;
                    if still.is_empty() {
                        return Ok(());
                    }
                    anyhow::bail!(
                        "created, but not in the broker's metadata within {VISIBLE_WITHIN:?}: {}",
                        still.join(", ")
                    );
                }
                anyhow::anyhow!(
                    "{} missing, and the broker does not let {who} create topics: the \
                     broker's setup (shipshape-kafka-setup) creates them and grants access",
                    refused.join(", ")
                )
            }
            Err(error) => anyhow::Error::new(error).context("creating topics"),
        };
        if attempt >= CREATION_ATTEMPTS {
            return Err(failure);
        }
        tracing::warn!(error = %format!("{failure:#}"), attempt, "the topics are not there yet");
        tokio::time::sleep(CREATION_BACKOFF.delay(attempt)).await;
    }
    unreachable!("the retry loop returns")
}

/// The names in `names` that the broker's metadata does not show with a
/// leader for every partition, after waiting up to `within` for them.
async fn not_led(
    config: ClientConfig,
    names: Vec<String>,
    within: Duration,
) -> anyhow::Result<Vec<String>> {
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create().context("creating a metadata client")?;
        let deadline = Instant::now() + within;
        loop {
            let mut listed = Vec::with_capacity(names.len());
            for name in &names {
                if let Ok(metadata) = client.fetch_metadata(Some(name), Duration::from_secs(2)) {
                    listed.extend(metadata.topics().iter().map(|topic| {
                        let led = topic.error().is_none()
                            && !topic.partitions().is_empty()
                            && topic.partitions().iter().all(|p| p.leader() >= 0);
                        (topic.name().to_owned(), led)
                    }));
                }
            }
            let missing = not_visible(&listed, &names);
            if missing.is_empty() || Instant::now() >= deadline {
                return Ok(missing);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .context("reading the topics' metadata")?
}

/// The names in `wanted` that `listed` (topic name, all partitions led)
/// does not show as ready.
fn not_visible(listed: &[(String, bool)], wanted: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|name| !listed.iter().any(|(topic, led)| topic == *name && *led))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_counts_as_visible_only_when_listed_with_every_partition_led() {
        let wanted = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let listed = [("a".to_owned(), true), ("b".to_owned(), false)];
        assert_eq!(not_visible(&listed, &wanted), ["b", "c"]);
        let all = [
            ("c".to_owned(), true),
            ("b".to_owned(), true),
            ("a".to_owned(), true),
        ];
        assert!(not_visible(&all, &wanted).is_empty());
    }
}
