//! The consumer loop: at-least-once delivery turned into exactly-once effects
//! by handlers that record event ids in their own transaction ([`crate::inbox`]).
//!
//! Messages of one partition are handled one at a time, in order, by that
//! partition's own worker; different partitions are handled concurrently,
//! so a message being retried never holds up another partition. A
//! message's offset is stored only after its handler committed, so a crash
//! redelivers it, and never past a message still being retried. A message
//! that cannot be decoded, or fails `max_attempts` times, goes to the
//! dead-letter topic and the partition moves on.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing::field::Empty;

use shipshape_proto::Event;
use shipshape_runtime::Backoff;
use shipshape_runtime::ops::CheckFuture;
use shipshape_telemetry::TraceContext;

use crate::envelope::{self, Incoming};
use crate::{DEAD_LETTER_TOPIC, KafkaSettings};

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

/// Applies one event's effect.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, message: Incoming) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// Whether the consumer has joined its group, i.e. received an assignment
/// (possibly empty: a group may have more members than partitions). Until
/// then events sit unconsumed, so the service is not ready. It also tells
/// the partition workers when their partition is taken away.
#[derive(Clone, Default)]
pub struct GroupMembership {
    joined: Arc<AtomicBool>,
    backlogs: Backlogs,
}

/// The backlog of every partition that has a worker, so a revocation can
/// reach the worker at once.
type Backlogs = Arc<Mutex<HashMap<(String, i32), Arc<Backlog>>>>;

impl ClientContext for GroupMembership {}

impl ConsumerContext for GroupMembership {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        // Another member owns these partitions from now on: what their
        // workers still hold is its to handle, in order, and must not also
        // be handled here.
        let mut backlogs = self.backlogs.lock().unwrap_or_else(PoisonError::into_inner);
        for partition in partitions.elements() {
            let key = (partition.topic().to_owned(), partition.partition());
            if let Some(backlog) = backlogs.remove(&key) {
                backlog.revoke(consumer);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // The whole assignment, whether the protocol hands out all of it at
        // once (classic, eager) or a change at a time (KIP-848).
        if let Ok(assignment) = consumer.assignment() {
            metrics::gauge!(crate::ASSIGNED_PARTITIONS).set(assignment.count() as f64);
        }
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(
                    partitions = partitions.count(),
                    "consumer group assignment received"
                );
                self.joined.store(true, Ordering::Release);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "consumer group rebalance failed"),
        }
    }
}

impl GroupMembership {
    /// A readiness check that passes once the group was joined.
    pub fn check(&self) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
        let joined = self.joined.clone();
        move || {
            let joined = joined.load(Ordering::Acquire);
            Box::pin(async move {
                if joined {
                    Ok(())
                } else {
                    Err("not yet assigned partitions by the consumer group".to_owned())
                }
            })
        }
    }
}

pub struct ConsumerLoop<H> {
    membership: GroupMembership,
    settings: KafkaSettings,
    topics: Vec<&'static str>,
    handler: Arc<H>,
    dead_letters: FutureProducer,
}

/// Between attempts to handle an event that failed.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// A partition's backlog at which fetching it pauses, and the backlog at
/// which it resumes. A partition stuck retrying one message thus holds at
/// most about this many messages in memory while the others keep flowing.
const PAUSE_AT: usize = 64;
const RESUME_AT: usize = 16;

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
                    max_attempts: self.settings.max_attempts,
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

/// How often the lag of every assigned partition is published.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Publishes `shipshape_consumer_lag{topic,partition}` for every partition
/// assigned to this member, every [`LAG_INTERVAL`] until `stop`. It counts
/// from the committed offset, as `kafka-consumer-groups` does: what this
/// member has not yet handled or not yet committed (commits follow within
/// `auto.commit.interval.ms`). The broker round trips block, so they run off
/// the async runtime.
async fn report_lag(consumer: Arc<GroupConsumer>, stop: CancellationToken) {
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

/// Where the dispatcher hands one partition's messages to its worker.
struct Lane {
    messages: mpsc::UnboundedSender<OwnedMessage>,
    backlog: Arc<Backlog>,
}

/// How many of a partition's messages wait in its lane, and whether the
/// partition is paused because of it. Pausing and resuming happen under
/// the lock, so the dispatcher and the worker cannot undo each other.
struct Backlog {
    partition: TopicPartitionList,
    state: Mutex<BacklogState>,
}

#[derive(Default)]
struct BacklogState {
    queued: usize,
    paused: bool,
    revoked: bool,
}

impl Lane {
    fn new(topic: &str, partition: i32) -> (Self, mpsc::UnboundedReceiver<OwnedMessage>) {
        let (messages, receiver) = mpsc::unbounded_channel();
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        let backlog = Arc::new(Backlog {
            partition: list,
            state: Mutex::new(BacklogState::default()),
        });
        (Self { messages, backlog }, receiver)
    }

    /// Queues a message for the worker, pausing the partition when its
    /// backlog is full. A worker that stopped has cancelled the loop's
    /// `worker_stopped`, so a message it can no longer take is not lost:
    /// its offset is never stored.
    fn push(&self, consumer: &GroupConsumer, message: OwnedMessage) {
        let mut state = self.backlog.lock();
        if self.messages.send(message).is_err() {
            return;
        }
        state.queued += 1;
        if state.queued >= PAUSE_AT && !state.paused {
            // librdkafka drops what it prefetched for the partition and, on
            // resume, fetches again from the last message handed to us.
            match consumer.pause(&self.backlog.partition) {
                Ok(()) => {
                    state.paused = true;
                    metrics::gauge!(crate::PAUSED_PARTITIONS).increment(1);
                    tracing::info!(
                        partition = ?self.backlog.partition,
                        "partition paused while its worker catches up"
                    );
                }
                Err(error) => tracing::warn!(%error, "cannot pause a partition"),
            }
        }
    }
}

impl Backlog {
    fn lock(&self) -> std::sync::MutexGuard<'_, BacklogState> {
        // Two plain fields, updated together: a panic elsewhere cannot leave
        // them torn, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_revoked(&self) -> bool {
        self.lock().revoked
    }

    /// The partition was taken away: the worker drops what it still holds,
    /// and a pause ends with the assignment (resumed, so the partition is
    /// not still paused if it comes back to this member).
    fn revoke(&self, consumer: &BaseConsumer<GroupMembership>) {
        let mut state = self.lock();
        state.revoked = true;
        if state.paused {
            if let Err(error) = consumer.resume(&self.partition) {
                tracing::debug!(%error, "cannot resume a revoked partition");
            }
            state.paused = false;
            metrics::gauge!(crate::PAUSED_PARTITIONS).decrement(1);
        }
    }

    /// One message left the lane; resumes the partition once the backlog
    /// has drained far enough.
    fn done(&self, consumer: &GroupConsumer) {
        let mut state = self.lock();
        state.queued = state.queued.saturating_sub(1);
        if state.paused && !state.revoked && state.queued <= RESUME_AT {
            // Fails only when the partition was revoked meanwhile; its new
            // owner fetches it anyway.
            if let Err(error) = consumer.resume(&self.partition) {
                tracing::debug!(%error, "cannot resume a partition");
            }
            state.paused = false;
            metrics::gauge!(crate::PAUSED_PARTITIONS).decrement(1);
        }
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

struct Worker<H> {
    consumer: Arc<GroupConsumer>,
    handler: Arc<H>,
    dead_letters: FutureProducer,
    /// [`DEAD_LETTER_TOPIC`] with the topic prefix.
    dead_letter_topic: String,
    group: String,
    max_attempts: u32,
    handling: Arc<Semaphore>,
    backlog: Arc<Backlog>,
    shutdown: CancellationToken,
}

impl<H: Handler> Worker<H> {
    /// Handles one partition's messages in order until its lane closes.
    /// Stopping for any other reason than shutdown or revocation (including
    /// a panic) cancels `stopped`, which stops the whole consumer.
    async fn run(
        self,
        mut messages: mpsc::UnboundedReceiver<OwnedMessage>,
        stopped: CancellationToken,
    ) {
        let alarm = stopped.drop_guard();
        while let Some(message) = messages.recv().await {
            if self.shutdown.is_cancelled() {
                // Not handled, offset not stored: redelivered after restart.
                break;
            }
            if self.backlog.is_revoked() {
                // Its new owner handles it, from the committed offset.
                continue;
            }
            let span = process_span(&message);
            let done = async {
                match message.payload().map(envelope::open) {
                    None => self.dead_letter(&message, "empty message").await,
                    Some(Err(error)) => self.dead_letter(&message, &error.to_string()).await,
                    Some(Ok(incoming)) => {
                        tracing::Span::current()
                            .record("order_id", tracing::field::display(incoming.order_id))
                            .record(
                                "messaging.message.id",
                                tracing::field::display(incoming.event_id),
                            )
                            .record("event_type", incoming.event.type_name());
                        self.handle_with_retries(&message, incoming).await
                    }
                }
            }
            .instrument(span)
            .await;
            if !done {
                if self.shutdown.is_cancelled() {
                    break;
                }
                return;
            }
            if let Err(error) =
                self.consumer
                    .store_offset(message.topic(), message.partition(), message.offset())
            {
                // The partition was revoked meanwhile; its new owner redelivers.
                tracing::debug!(%error, "offset not stored");
            }
            self.backlog.done(&self.consumer);
        }
        alarm.disarm();
    }

    /// `true` once the message is handled or dead-lettered; `false` when
    /// shutdown interrupted the retries.
    async fn handle_with_retries(&self, message: &OwnedMessage, incoming: Incoming) -> bool {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = self.handling.acquire().await;
            let event_type = incoming.event.type_name();
            let started = Instant::now();
            let handled = self.handler.handle(incoming.clone()).await;
            metrics::histogram!(crate::EVENT_HANDLE_DURATION, "type" => event_type)
                .record(started.elapsed().as_secs_f64());
            let error = match handled {
                Ok(()) => {
                    metrics::counter!(crate::EVENTS_HANDLED, "type" => event_type).increment(1);
                    return true;
                }
                Err(error) => error,
            };
            // A backoff holds no permit, so other partitions can run.
            drop(permit);
            metrics::counter!(crate::EVENTS_FAILED, "type" => event_type).increment(1);
            if attempt >= self.max_attempts && !error.is_transient() {
                let reason = format!("failed {attempt} times, last: {error}");
                return self.dead_letter(message, &reason).await;
            }
            let delay = RETRY_BACKOFF.delay(attempt);
            tracing::warn!(
                %error, attempt, event_type = incoming.event.type_name(),
                order_id = %incoming.order_id, retry_in_ms = delay.as_millis() as u64,
                "handler failed"
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Publishes the message unchanged to the dead-letter topic, with where it
    /// came from and why in headers. Retries until the broker takes it.
    async fn dead_letter(&self, message: &OwnedMessage, reason: &str) -> bool {
        let reason = capped(reason, MAX_REASON_BYTES);
        tracing::error!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "dead-lettering message"
        );
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "dlq.source.topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "dlq.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "dlq.source.offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "dlq.consumer.group",
                value: Some(&self.group),
            })
            .insert(Header {
                key: "dlq.error",
                value: Some(reason),
            });
        // A message near the broker's size limit no longer fits once the
        // headers are added; it is then dead-lettered without its body
        // rather than retried forever, which would stop the partition.
        let mut dropped: Option<String> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut record = FutureRecord::to(&self.dead_letter_topic);
            match &dropped {
                None => {
                    record = record.headers(headers.clone());
                    if let Some(key) = message.key() {
                        record = record.key(key);
                    }
                    if let Some(payload) = message.payload() {
                        record = record.payload(payload);
                    }
                }
                Some(sizes) => {
                    record = record.headers(headers.clone().insert(Header {
                        key: "dlq.body.dropped",
                        value: Some(sizes),
                    }))
                }
            }
            match self
                .dead_letters
                .send(record, Duration::from_secs(10))
                .await
            {
                Ok(_) => {
                    metrics::counter!(crate::DEAD_LETTERS, "topic" => message.topic().to_owned())
                        .increment(1);
                    return true;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                    if dropped.is_none() =>
                {
                    let sizes = format!(
                        "too large for the dead-letter topic: key {} bytes, payload {} bytes",
                        message.key().map_or(0, <[u8]>::len),
                        message.payload().map_or(0, <[u8]>::len)
                    );
                    tracing::warn!(%sizes, "dead-lettering without the message's key and payload");
                    dropped = Some(sizes);
                    continue;
                }
                Err((error, _)) => tracing::warn!(%error, "dead-letter publish failed"),
            }
            if let Some((code, reason)) = self.dead_letters.client().fatal_error() {
                // The producer will never recover; stopping this worker ends
                // the consumer, and with it the process, so it is restarted.
                tracing::error!(?code, reason, "producer failed fatally");
                return false;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(RETRY_BACKOFF.delay(attempt)) => {}
            }
        }
    }
}

/// The longest `dlq.error` header: a reason quotes the offending value,
/// which a hostile message can make as large as the message itself.
const MAX_REASON_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes, on a character boundary.
fn capped(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The span of handling one message: a child of the span that published it
/// (see `outbox`), so the whole checkout is one trace. A child rather than a
/// link because each message is handled on its own, as the next step of the
/// one piece of work that sent it; a link would suit a span that handles a
/// batch of unrelated messages, which this consumer never does.
fn process_span(message: &OwnedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "message.process",
        otel.name = %format_args!("{} process", message.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = message.topic(),
        messaging.destination.partition.id = message.partition(),
        messaging.kafka.offset = message.offset(),
        messaging.message.id = Empty,
        event_type = Empty,
        order_id = Empty,
    );
    if let Some(headers) = message.headers() {
        TraceContext::from_pairs(
            headers
                .iter()
                .filter_map(|header| Some((header.key, header.value?))),
        )
        .adopt(&span);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_capped_on_a_character_boundary() {
        assert_eq!(capped("short", 1024), "short");
        let long = "é".repeat(600);
        let cut = capped(&long, 1024);
        assert!(cut.len() <= 1024);
        assert_eq!(cut.chars().count(), 512);
    }

    #[test]
    fn only_outages_are_transient() {
        assert!(HandleError::Database(sqlx::Error::PoolTimedOut).is_transient());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(HandleError::Database(sqlx::Error::Io(io)).is_transient());
        assert!(!HandleError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!HandleError::Other("OrderPlaced without a total".into()).is_transient());
    }
}
