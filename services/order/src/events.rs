//! Follows the saga: applies every other service's event to the order and
//! publishes the order's decisions.

use shipshape_messaging::inbox::Effect;
use shipshape_messaging::{HandleError, Incoming, outbox};
use shipshape_proto::Event;
use shipshape_types::OrderId;
use sqlx::{PgConnection, PgPool};

use crate::saga::{CancelReason, Observation, OrderStatus};
use crate::{store, timeline};

pub const PRODUCER: &str = "order";

pub const SAGA_OUTCOMES: &str = "shipshape_saga_outcomes_total";
pub const SAGA_DURATION: &str = "shipshape_saga_duration_seconds";

/// Registers the help text of the saga's metrics, and makes every outcome's
/// counter exist at 0, so a dashboard shows "no cancellations" rather than no
/// data before the first one.
pub fn describe() {
    metrics::counter!(SAGA_OUTCOMES, "status" => OrderStatus::Confirmed.as_str(), "reason" => "none")
        .increment(0);
    for reason in CancelReason::ALL {
        metrics::counter!(
            SAGA_OUTCOMES,
            "status" => OrderStatus::Cancelled.as_str(),
            "reason" => reason.as_str()
        )
        .increment(0);
    }
    metrics::describe_counter!(
        SAGA_OUTCOMES,
        "Orders that reached their outcome, by status (CONFIRMED, CANCELLED) and cancellation reason (none when confirmed)"
    );
    metrics::describe_histogram!(
        SAGA_DURATION,
        metrics::Unit::Seconds,
        "Time from an order's placement to its outcome, by status"
    );
}

/// What [`advance`] did.
pub enum Advanced {
    /// There is no such order.
    UnknownOrder,
    /// The observation was applied; `Some` when it made the order terminal.
    Applied(Option<Outcome>),
}

/// An order reaching CONFIRMED or CANCELLED. Record it only once the
/// transaction that made it so has committed: a rolled-back or redelivered
/// step must not count an order twice.
#[must_use = "record the outcome once its transaction has committed"]
pub struct Outcome {
    status: OrderStatus,
    reason: Option<CancelReason>,
    /// From the order's `created_at` to its `completed_at`.
    seconds: f64,
}

impl Outcome {
    pub fn record(&self) {
        let status = self.status.as_str();
        let reason = self.reason.map_or("none", CancelReason::as_str);
        metrics::counter!(SAGA_OUTCOMES, "status" => status, "reason" => reason).increment(1);
        metrics::histogram!(SAGA_DURATION, "status" => status).record(self.seconds);
    }
}

/// Applies `observation` to the locked order and queues what it decides.
/// `cause`, the consumed event the observation comes from, joins the
/// order's timeline under the order's lock, so rows of one order get their
/// sequences in the order their transactions commit (which a stream
/// resuming after a sequence relies on), and before the rows of what it
/// causes.
pub async fn advance(
    conn: &mut PgConnection,
    order_id: OrderId,
    observation: Observation,
    cause: Option<&Incoming>,
) -> sqlx::Result<Advanced> {
    let Some(mut saga) = store::lock_saga(&mut *conn, order_id).await? else {
        return Ok(Advanced::UnknownOrder);
    };
    if let Some(cause) = cause {
        timeline::record_current(&mut *conn, cause).await?;
    }
    let before = saga;
    let decisions = saga.observe(observation);
    let mut completed_after = None;
    if saga != before {
        completed_after = store::save_saga(&mut *conn, order_id, &saga).await?;
    }
    for event in &decisions {
        let sent = outbox::enqueue(&mut *conn, PRODUCER, order_id, event).await?;
        timeline::record_current(&mut *conn, &sent).await?;
    }
    if saga.status != before.status {
        tracing::info!(
            %order_id, ?observation, from = before.status.as_str(), to = saga.status.as_str(),
            reason = saga.reason.map(|r| r.as_str()), "order status changed"
        );
    }
    // The order is locked, so this transition happens once; only the
    // caller knows when it is committed.
    let outcome = match completed_after {
        Some(seconds) if saga.status.is_terminal() && !before.status.is_terminal() => {
            Some(Outcome {
                status: saga.status,
                reason: saga.reason,
                seconds,
            })
        }
        _ => None,
    };
    Ok(Advanced::Applied(outcome))
}

pub struct OrderEvents {
    pool: PgPool,
}

impl OrderEvents {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Effect for OrderEvents {
    type Committed = Option<Outcome>;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn concerns(&self, event: &Event) -> bool {
        Observation::from_event(event).is_some()
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        message: &Incoming,
    ) -> Result<Option<Outcome>, HandleError> {
        let Some(observation) = Observation::from_event(&message.event) else {
            return Ok(None);
        };
        match advance(tx, message.order_id, observation, Some(message)).await? {
            Advanced::Applied(outcome) => Ok(outcome),
            Advanced::UnknownOrder => {
                // Recorded in the inbox all the same: a redelivery changes nothing.
                tracing::warn!(order_id = %message.order_id, event_type = message.event.type_name(),
                    "event for an unknown order ignored");
                Ok(None)
            }
        }
    }

    fn committed(&self, outcome: Option<Outcome>) {
        if let Some(outcome) = outcome {
            outcome.record();
        }
    }
}
