//! A partition's lane from the dispatcher to its worker, and the backlog
//! that pauses fetching the partition while the worker catches up.

use std::sync::{Arc, Mutex};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;

use super::{GroupConsumer, GroupMembership};

/// A partition's backlog at which fetching it pauses, and the backlog at
/// which it resumes. A partition stuck retrying one message thus holds at
/// most about this many messages in memory while the others keep flowing.
const PAUSE_AT: usize = 64;
const RESUME_AT: usize = 16;

/// Where the dispatcher hands one partition's messages to its worker.
pub(super) struct Lane {
    messages: mpsc::UnboundedSender<OwnedMessage>,
    pub(super) backlog: Arc<Backlog>,
}

/// How many of a partition's messages wait in its lane, and whether the
/// partition is paused because of it. Pausing and resuming happen under
/// the lock, so the dispatcher and the worker cannot undo each other.
pub(super) struct Backlog {
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
    pub(super) fn new(
        topic: &str,
        partition: i32,
    ) -> (Self, mpsc::UnboundedReceiver<OwnedMessage>) {
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
    pub(super) fn push(&self, consumer: &GroupConsumer, message: OwnedMessage) {
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

    pub(super) fn is_revoked(&self) -> bool {
        self.lock().revoked
    }

    /// The partition was taken away: the worker drops what it still holds,
    /// and a pause ends with the assignment (resumed, so the partition is
    /// not still paused if it comes back to this member).
    pub(super) fn revoke(&self, consumer: &BaseConsumer<GroupMembership>) {
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

    /// `count` messages left the lane; resumes the partition once the
    /// backlog has drained far enough.
    pub(super) fn done(&self, consumer: &GroupConsumer, count: usize) {
        let mut state = self.lock();
        state.queued = state.queued.saturating_sub(count);
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
