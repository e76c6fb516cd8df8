//! Follows the saga: applies every other service's event to the order and
//! publishes the order's decisions.

use shipshape_messaging::{HandleError, Handler, Incoming, inbox, outbox};
use shipshape_types::OrderId;
use sqlx::{PgConnection, PgPool};

use crate::saga::Observation;
use crate::store;

pub const PRODUCER: &str = "order";

/// Applies `observation` to the locked order and queues what it decides.
/// Returns `false` when there is no such order.
pub async fn advance(
    conn: &mut PgConnection,
    order_id: OrderId,
    observation: Observation,
) -> sqlx::Result<bool> {
    let Some(mut saga) = store::lock_saga(&mut *conn, order_id).await? else {
        return Ok(false);
    };
    let before = saga;
    let decisions = saga.observe(observation);
    if saga != before {
        store::save_saga(&mut *conn, order_id, &saga).await?;
    }
    for event in &decisions {
        outbox::enqueue(&mut *conn, PRODUCER, order_id, event).await?;
    }
    if saga.status != before.status {
        tracing::info!(
            %order_id, ?observation, from = before.status.as_str(), to = saga.status.as_str(),
            reason = saga.reason.map(|r| r.as_str()), "order status changed"
        );
    }
    Ok(true)
}

pub struct OrderEvents {
    pool: PgPool,
}

impl OrderEvents {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Handler for OrderEvents {
    async fn handle(&self, message: Incoming) -> Result<(), HandleError> {
        let Some(observation) = Observation::from_event(&message.event) else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        if !inbox::first_delivery(&mut tx, message.event_id, message.event.type_name()).await? {
            return Ok(());
        }
        if !advance(&mut tx, message.order_id, observation).await? {
            // Recorded in the inbox all the same: a redelivery changes nothing.
            tracing::warn!(order_id = %message.order_id, event_type = message.event.type_name(),
                "event for an unknown order ignored");
        }
        tx.commit().await?;
        Ok(())
    }
}
