//! A partition's worker: handles its messages one at a time, in order,
//! retrying failures, and stores each one's offset once it is done.

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
use super::{GroupConsumer, Handler};
use crate::envelope::{self, Incoming};

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
    pub(super) handling: Arc<Semaphore>,
    pub(super) backlog: Arc<Backlog>,
    pub(super) shutdown: CancellationToken,
}

impl<H: Handler> Worker<H> {
    /// Handles one partition's messages in order until its lane closes.
    /// Stopping for any other reason than shutdown or revocation (including
    /// a panic) cancels `stopped`, which stops the whole consumer.
    pub(super) async fn run(
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
                        if let Err(reason) = envelope::check_provenance(&incoming, &self.topic) {
                            return self.dead_letter(&message, &reason).await;
                        }
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
}
