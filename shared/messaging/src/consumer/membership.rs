//! The consumer's membership of its group: readiness once partitions are
//! assigned, and revocation of a partition's backlog when it is taken away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use shipshape_runtime::ops::CheckFuture;

use super::lane::Backlog;

/// Whether the consumer has joined its group, i.e. received an assignment
/// (possibly empty: a group may have more members than partitions). Until
/// then events sit unconsumed, so the service is not ready. It also tells
/// the partition workers when their partition is taken away.
#[derive(Clone, Default)]
pub struct GroupMembership {
    joined: Arc<AtomicBool>,
    pub(super) backlogs: Backlogs,
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
