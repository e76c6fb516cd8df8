//! A partition's worker: handles its messages in order, a batch of what
//! has arrived at a time, retrying failures, and stores the batch's last
//! offset once all of it is done.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use shipshape_runtime::Backoff;

use super::lane::Backlog;
use super::span::process_span;
use super::{Delivery, GroupConsumer, Handler};
use crate::envelope;

/// Between attempts to handle an event that failed.
pub(super) const RETRY_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

pub(super) struct Worker<H> {
    pub(super) consumer: Arc<GroupConsumer>,
    pub(super) handler: Arc<H>,
    pub(super) dead_letters: FutureProducer,
    /// [`DEAD_LETTER_TOPIC`](crate::DEAD_LETTER_TOPIC) with the topic prefix.
    pub(super) dead_letter_topic: String,
    /// The partition's topic, without the prefix: what decides which
    /// events may be applied from it.
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) max_attempts: u32,
    /// `CONSUMER_MAX_BATCH`.
    pub(super) max_batch: usize,
    pub(super) handling: Arc<Semaphore>,
    pub(super) backlog: Arc<Backlog>,
    pub(super) shutdown: CancellationToken,
}

/// How handling a batch ended.
enum BatchEnd {
    /// Every message is handled or dead-lettered.
    Done,
    /// The partition was taken away part-way; the rest is its new owner's.
    Revoked,
    /// Shutdown interrupted the retries, or dead-lettering failed for good.
    Interrupted,
}

impl<H: Handler> Worker<H> {
    /// Handles one partition's messages in order until its lane closes,
    /// taking whatever has arrived (up to `max_batch`) as one batch:
    /// nothing waits for a batch to fill. Stopping for any other reason
    /// than shutdown or revocation (including a panic) cancels `stopped`,
    /// which stops the whole consumer.
    pub(super) async fn run(
        self,
        mut messages: mpsc::UnboundedReceiver<OwnedMessage>,
        stopped: CancellationToken,
    ) {
        let alarm = stopped.drop_guard();
        let mut batch = Vec::with_capacity(self.max_batch);
        while messages.recv_many(&mut batch, self.max_batch).await > 0 {
            if self.shutdown.is_cancelled() {
                // Not handled, offsets not stored: redelivered after restart.
                break;
            }
            if self.backlog.is_revoked() {
                // Its new owner handles them, from the committed offset.
                batch.clear();
                continue;
            }
            match self.handle_batch(&batch).await {
                BatchEnd::Done => {
                    if let Some(last) = batch.last() {
                        self.store_offset(last);
                    }
                }
                // Its new owner handles the rest, from the committed offset.
                BatchEnd::Revoked => {}
                BatchEnd::Interrupted if self.shutdown.is_cancelled() => break,
                BatchEnd::Interrupted => return,
            }
            self.backlog.done(&self.consumer, batch.len());
            batch.clear();
        }
        alarm.disarm();
    }

    /// Stores `message`'s offset: it and everything before it are done.
    fn store_offset(&self, message: &OwnedMessage) {
        if let Err(error) =
            self.consumer
                .store_offset(message.topic(), message.partition(), message.offset())
        {
            // The partition was revoked meanwhile; its new owner redelivers.
            tracing::debug!(%error, "offset not stored");
        }
    }

    /// Dead-letters the messages that cannot be handled and handles the
    /// others: all in one call of the handler, or, if that fails, one at a
    /// time with retries, storing each one's offset as it is done (so a
    /// restart does not repeat those retries or dead letters).
    async fn handle_batch(&self, batch: &[OwnedMessage]) -> BatchEnd {
        let mut handled = Vec::with_capacity(batch.len());
        let mut deliveries = Vec::with_capacity(batch.len());
        for message in batch {
            let span = process_span(message);
            let rejected = match message.payload().map(envelope::open) {
                None => Some("empty message".to_owned()),
                Some(Err(error)) => Some(error.to_string()),
                Some(Ok(incoming)) => match envelope::check_provenance(&incoming, &self.topic) {
                    Err(reason) => Some(reason),
                    Ok(()) => {
                        span.record("order_id", tracing::field::display(incoming.order_id))
                            .record(
                                "messaging.message.id",
                                tracing::field::display(incoming.event_id),
                            )
                            .record("event_type", incoming.event.type_name());
                        handled.push(message);
                        deliveries.push(Delivery {
                            message: incoming,
                            span,
                        });
                        continue;
                    }
                },
            };
            // It has no effect, so dead-lettering it before the messages
            // around it are handled changes nothing they do. Its offset is
            // stored with the batch's: a restart before then dead-letters
            // it again (dead letters are at least once).
            if let Some(reason) = rejected
                && !self.dead_letter(message, &reason).instrument(span).await
            {
                return BatchEnd::Interrupted;
            }
        }
        if deliveries.len() > 1 {
            if self.handle_at_once(&deliveries).await {
                return BatchEnd::Done;
            }
            metrics::counter!(crate::EVENT_BATCH_FALLBACKS).increment(1);
        }
        for (message, delivery) in handled.into_iter().zip(deliveries) {
            if self.backlog.is_revoked() {
                return BatchEnd::Revoked;
            }
            let span = delivery.span.clone();
            if !self
                .handle_with_retries(message, delivery)
                .instrument(span)
                .await
            {
                return BatchEnd::Interrupted;
            }
            self.store_offset(message);
        }
        BatchEnd::Done
    }

    /// One attempt to handle the whole batch; `false` if it failed, and
    /// then none of it took effect.
    async fn handle_at_once(&self, batch: &[Delivery]) -> bool {
        let _permit = self.handling.acquire().await;
        let started = Instant::now();
        let handled = self.handler.handle(batch).await;
        // Each event's share of the batch's time, so the histogram's sum
        // stays the time spent handling.
        let share = started.elapsed().as_secs_f64() / batch.len() as f64;
        metrics::counter!(crate::EVENT_BATCHES).increment(1);
        match handled {
            Ok(()) => {
                for delivery in batch {
                    let event_type = delivery.message.event.type_name();
                    metrics::histogram!(crate::EVENT_HANDLE_DURATION, "type" => event_type)
                        .record(share);
                    metrics::counter!(crate::EVENTS_HANDLED, "type" => event_type).increment(1);
                }
                true
            }
            Err(error) => {
                // Not counted as a failure of any event: the one at fault,
                // if any, fails again on its own.
                tracing::info!(%error, size = batch.len(), "batch failed; handling its events one at a time");
                false
            }
        }
    }

    /// `true` once the message is handled or dead-lettered; `false` when
    /// shutdown interrupted the retries.
    async fn handle_with_retries(&self, message: &OwnedMessage, delivery: Delivery) -> bool {
        let event_type = delivery.message.event.type_name();
        let order_id = delivery.message.order_id;
        let batch = [delivery];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = self.handling.acquire().await;
            let started = Instant::now();
            let handled = self.handler.handle(&batch).await;
            metrics::histogram!(crate::EVENT_HANDLE_DURATION, "type" => event_type)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(crate::EVENT_BATCHES).increment(1);
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
                %error, attempt, event_type, %order_id,
                retry_in_ms = delay.as_millis() as u64,
                "handler failed"
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}
