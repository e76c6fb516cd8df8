//! The consumer loop: at-least-once delivery turned into exactly-once effects
//! by handlers that record event ids in their own transaction ([`crate::inbox`]).
//!
//! Messages of one partition are handled by that partition's own worker, in
//! batches of what has arrived (one transaction for the lot), each order's
//! events in the order they were published;
//! different partitions are handled concurrently, so a message being
//! retried never holds up another partition. A message's offset is stored
//! only after its handler committed, so a crash redelivers it, and never
//! past a message still being retried. A batch that fails is handled again
//! one message at a time, so one bad message cannot hold back the others. A
//! message that cannot be decoded, or fails `max_attempts` times, goes to
//! the dead-letter topic and the partition moves on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use shipshape_proto::Event;
use shipshape_runtime::ops::CheckFuture;

use crate::envelope::Incoming;
use crate::{DEAD_LETTER_TOPIC, KafkaSettings};

mod dead_letter;
mod lag;
mod lane;
mod membership;
mod span;
mod worker;

pub use membership::GroupMembership;

use lag::report_lag;
use lane::Lane;
use worker::Worker;

/// Why a handler did not complete. Every failure is retried with backoff.
/// A transient one (see [`HandleError::is_transient`]) is retried until it
/// passes, holding its partition; any other is dead-lettered once it has
/// failed `max_attempts` times.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Other(String),
}

impl HandleError {
    /// Failures that end by themselves: the database unreachable or
    /// restarting, the pool exhausted, a deadlock or serialization victim.
    /// Dead-lettering these would drop saga steps during a database outage.
    pub fn is_transient(&self) -> bool {
        let HandleError::Database(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // Connection exceptions, insufficient resources, operator
                // intervention (shutdown), serialization failure, deadlock.
                ["08", "53", "57P"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || code == "40001"
                    || code == "40P01"
            }),
            _ => false,
        }
    }
}

/// One consumed event, with the span its handling is traced in.
pub struct Delivery {
    pub message: Incoming,
    /// A child of the span that published the event (see `outbox`).
    pub span: tracing::Span,
}

/// Applies the effects of a run of one partition's events, all or none: a
/// failure must leave no effect of any of them. The batch is in partition
/// order; a handler may reorder events of different orders (they are
/// independent) but not those of one order. A service
/// implements [`inbox::Effect`](crate::inbox::Effect) instead, which does
/// this in one database transaction.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, batch: &[Delivery]) -> impl Future<Output = Result<(), HandleError>> + Send;
}

pub struct ConsumerLoop<H> {
    membership: GroupMembership,
    settings: KafkaSettings,
    topics: Vec<&'static str>,
    handler: Arc<H>,
    dead_letters: FutureProducer,
}

type GroupConsumer = StreamConsumer<GroupMembership>;

impl<H: Handler> ConsumerLoop<H> {
    pub fn new(
        settings: KafkaSettings,
        topics: Vec<&'static str>,
        handler: H,
        dead_letters: FutureProducer,
    ) -> Self {
        Self {
            membership: GroupMembership::default(),
            settings,
            topics,
            handler: Arc::new(handler),
            dead_letters,
        }
    }

    /// Makes the counters of every event type this loop can receive, and of
    /// its dead letters per topic, exist at 0 before the first message, so
    /// dashboards and alerts see 0 rather than no data.
    fn register_counters(&self, subscribed: &[&str]) {
        let receivable = Event::TYPES
            .iter()
            .filter(|(_, topic)| self.topics.contains(topic));
        for (event_type, _) in receivable {
            metrics::counter!(crate::EVENTS_HANDLED, "type" => *event_type).increment(0);
            metrics::counter!(crate::EVENTS_FAILED, "type" => *event_type).increment(0);
        }
        metrics::counter!(crate::EVENT_BATCHES).increment(0);
        metrics::counter!(crate::EVENT_BATCH_FALLBACKS).increment(0);
        for topic in subscribed {
            metrics::counter!(crate::DEAD_LETTERS, "topic" => topic.to_string()).increment(0);
        }
    }

    /// Readiness of this consumer: see [`GroupMembership`].
    pub fn membership_check(&self) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
        self.membership.check()
    }

    /// Consumes until `shutdown`, then commits what was handled and leaves
    /// the group, so the next member resumes exactly there.
    ///
    /// Each partition gets its own worker, so a message being retried holds
    /// back only the messages behind it in its partition. A shared semaphore
    /// bounds how many handlers run at once (`CONSUMER_CONCURRENCY`); a
    /// worker waiting out a backoff holds no permit.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = Arc::new(self.settings.consumer(self.membership.clone())?);
        let topics: Vec<String> = self.topics.iter().map(|t| self.settings.topic(t)).collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tracing::info!(?topics, group = %self.settings.group_id, "consuming");
        self.register_counters(&topics);

        let handling = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut lanes: HashMap<(String, i32), Lane> = HashMap::new();
        let mut workers = Vec::new();
        // Cancelled by a worker that stops on its own (a fatal producer
        // error, a panicking handler): its partition would stall unseen.
        let worker_stopped = CancellationToken::new();
        let workers_shutdown = shutdown.child_token();
        let lag = tokio::spawn(report_lag(consumer.clone(), workers_shutdown.clone()));

        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = worker_stopped.cancelled() => break,
                received = consumer.recv() => received,
            };
            let message = match received {
                Ok(m) => m.detach(),
                Err(error) => {
                    tracing::warn!(%error, "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let key = (message.topic().to_owned(), message.partition());
            // A revoked partition's worker drops what it holds; a partition
            // assigned again gets a fresh worker.
            if lanes.get(&key).is_none_or(|lane| lane.backlog.is_revoked()) {
                let (lane, messages) = Lane::new(message.topic(), message.partition());
                self.membership
                    .backlogs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key.clone(), lane.backlog.clone());
                let worker = Worker {
                    consumer: consumer.clone(),
                    handler: self.handler.clone(),
                    dead_letters: self.dead_letters.clone(),
                    group: self.settings.group_id.clone(),
                    dead_letter_topic: self.settings.topic(DEAD_LETTER_TOPIC),
                    topic: self.settings.unprefixed(message.topic()).to_owned(),
                    max_attempts: self.settings.max_attempts,
                    max_batch: self.settings.max_batch,
                    handling: handling.clone(),
                    backlog: lane.backlog.clone(),
                    shutdown: workers_shutdown.clone(),
                };
                workers.push(tokio::spawn(worker.run(messages, worker_stopped.clone())));
                lanes.insert(key.clone(), lane);
            }
            if let Some(lane) = lanes.get(&key) {
                lane.push(&consumer, message);
            }
        }

        let failed = worker_stopped.is_cancelled() && !shutdown.is_cancelled();
        // Stops the other workers' retries too, so the process can exit and
        // be restarted instead of running with a partition that never moves.
        workers_shutdown.cancel();
        drop(lanes);
        for worker in workers {
            let _ = worker.await;
        }
        // Its clone of the consumer must be gone before the group is left.
        let _ = lag.await;
        leave_group(consumer).await;
        if failed {
            anyhow::bail!(
                "a partition worker stopped (dead-letter producer failed fatally, or a handler panicked)"
            );
        }
        Ok(())
    }
}

/// Commits stored offsets, leaves the group and closes the client. A plain
/// drop of a group consumer can block for minutes (rust-rdkafka #509), so
/// the assignment is drained first and the drop runs off the async runtime
/// with a watchdog.
async fn leave_group(consumer: Arc<GroupConsumer>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "final offset commit failed"),
    }
    consumer.unsubscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while consumer
        .assignment()
        .map(|a| a.count() > 0)
        .unwrap_or(false)
        && tokio::time::Instant::now() < deadline
    {
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    let closing = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(Duration::from_secs(20), closing)
        .await
        .is_err()
    {
        tracing::warn!("Kafka consumer did not close within 20 s; exiting anyway");
    }
}

#[cfg(test)]
mod tests;
