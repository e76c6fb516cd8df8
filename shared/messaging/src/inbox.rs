//! The idempotent-consumer half of exactly-once effects: a service's
//! [`Effect`] of an event commits in the same transaction as the record
//! that the event was processed, so a redelivery changes nothing.

use std::future::Future;

use shipshape_proto::Event;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::Incoming;
use crate::consumer::{Delivery, HandleError, Handler};

/// How long a transaction applying several events waits for a row lock
/// before it gives up, and its events are handled one at a time instead.
/// Two such transactions can each hold a row the other wants (two orders
/// taking the same two SKUs in opposite order); single events cannot, as
/// each locks its rows in one order. Without this the pair would wait for
/// Postgres's deadlock check, a second by default.
const BATCH_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '100ms'";
/// Lifted again before the commit: a commit that notifies (an outbox row)
/// queues for Postgres's notification lock behind other committers, which
/// is no deadlock and must not fail the batch.
const NO_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = 0";

/// What one event does to a service's own database. Every service's
/// consumer is one: the [`Handler`] it gets applies a batch of events in
/// one transaction, recording each in the inbox first and skipping those
/// recorded before.
pub trait Effect: Send + Sync + 'static {
    /// What is left to do once the effect is committed (a metric, waking a
    /// task), never anything the effect depends on.
    type Committed: Send;

    fn pool(&self) -> &PgPool;

    /// Whether `event` changes anything here; the others are acknowledged
    /// without a transaction or an inbox row.
    fn concerns(&self, event: &Event) -> bool;

    /// Applies the effect of `message`, inside the caller's transaction.
    fn apply(
        &self,
        tx: &mut PgConnection,
        message: &Incoming,
    ) -> impl Future<Output = Result<Self::Committed, HandleError>> + Send;

    /// Runs after the transaction with the effect committed.
    fn committed(&self, committed: Self::Committed);
}

impl<E: Effect> Handler for E {
    /// The events that concern this service, in one transaction, sorted by
    /// order id: a transaction locks rows of each order in turn, so two
    /// batches (from two partitions or topics) take their orders' rows in
    /// the same order and never deadlock over them; rows shared by orders
    /// (inventory's SKUs) are what [`BATCH_LOCK_TIMEOUT`] is for. The sort
    /// is stable, so each order's events keep the order they arrived in;
    /// events of different orders are independent.
    async fn handle(&self, batch: &[Delivery]) -> Result<(), HandleError> {
        let mut concerned: Vec<&Delivery> = batch
            .iter()
            .filter(|delivery| self.concerns(&delivery.message.event))
            .collect();
        if concerned.is_empty() {
            return Ok(());
        }
        concerned.sort_by_key(|delivery| delivery.message.order_id);
        let mut tx = self.pool().begin().await?;
        let batched = concerned.len() > 1;
        if batched {
            sqlx::query(BATCH_LOCK_TIMEOUT).execute(&mut *tx).await?;
        }
        let mut committed = Vec::with_capacity(concerned.len());
        for delivery in concerned {
            let message = &delivery.message;
            let applied = async {
                if !first_delivery(&mut tx, message.event_id, message.event.type_name()).await? {
                    return Ok(None);
                }
                self.apply(&mut tx, message).await.map(Some)
            }
            .instrument(delivery.span.clone())
            .await?;
            committed.extend(applied);
        }
        if batched {
            sqlx::query(NO_LOCK_TIMEOUT).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        for done in committed {
            self.committed(done);
        }
        Ok(())
    }
}

/// Records `event_id` as processed inside the caller's transaction. Returns
/// `false` when it was already recorded: the caller must then skip the
/// effect. A concurrent delivery of the same event waits on the primary key
/// until the first transaction ends, so only one of them sees `true`.
async fn first_delivery(
    conn: &mut PgConnection,
    event_id: Uuid,
    event_type: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        "INSERT INTO inbox (event_id, event_type) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
        event_id,
        event_type,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}
