//! Reacts to saga events: reserves stock for placed orders, releases it on
//! any compensation trigger, and marks it sold when an order is confirmed.

use shipshape_messaging::inbox::Effect;
use shipshape_messaging::{HandleError, Incoming, outbox};
use shipshape_proto::{Event, events};
use shipshape_types::{OrderId, Quantity, Sku};
use sqlx::{PgConnection, PgPool};

use crate::domain::{self, RejectReason, ReservationDecision, ReservationStatus};
use crate::store;

pub const PRODUCER: &str = "inventory";

pub struct InventoryEvents {
    pool: PgPool,
}

impl InventoryEvents {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn concerns_inventory(event: &Event) -> bool {
    matches!(
        event,
        Event::OrderPlaced(_)
            | Event::OrderConfirmed(_)
            | Event::OrderCancelled(_)
            | Event::PaymentDeclined(_)
            | Event::ShipmentFailed(_)
    )
}

impl Effect for InventoryEvents {
    type Committed = ();

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn concerns(&self, event: &Event) -> bool {
        concerns_inventory(event)
    }

    async fn apply(&self, tx: &mut PgConnection, message: &Incoming) -> Result<(), HandleError> {
        let order_id = message.order_id;
        match &message.event {
            Event::OrderPlaced(placed) => reserve(tx, order_id, placed).await,
            Event::OrderConfirmed(_) => settle(tx, order_id, ReservationStatus::commit).await,
            _ => settle(tx, order_id, ReservationStatus::release).await,
        }
    }

    fn committed(&self, (): ()) {}
}

async fn reserve(
    tx: &mut PgConnection,
    order_id: OrderId,
    placed: &events::OrderPlaced,
) -> Result<(), HandleError> {
    if store::lock_reservation(&mut *tx, order_id).await?.is_some() {
        // Settled already: the order was cancelled before its placement
        // reached us (see `settle`). Reserving now would hold stock forever.
        tracing::warn!(%order_id, "OrderPlaced after the order was settled; not reserving");
        return Ok(());
    }
    let decision = match parse_lines(placed) {
        Some(lines) => {
            let skus: Vec<Sku> = lines.iter().map(|(s, _)| s.clone()).collect();
            let available = store::lock_stock(&mut *tx, &skus).await?;
            match domain::decide(&lines, &available) {
                ReservationDecision::Reserve => {
                    store::reserve(&mut *tx, order_id, &lines).await?;
                    let event = Event::StockReserved(events::StockReserved {});
                    outbox::enqueue(&mut *tx, PRODUCER, order_id, &event).await?;
                    return Ok(());
                }
                rejection => rejection,
            }
        }
        None => ReservationDecision::Reject {
            reason: RejectReason::UnknownSku,
            skus: Vec::new(),
        },
    };
    if let ReservationDecision::Reject { reason, skus } = decision {
        tracing::info!(%order_id, reason = reason.as_str(), ?skus, "stock rejected");
        store::insert_reservation(
            &mut *tx,
            order_id,
            ReservationStatus::Rejected,
            Some(reason.as_str()),
        )
        .await?;
        let event = Event::StockRejected(events::StockRejected {
            reason: reason.as_str().to_owned(),
            skus: skus.into_iter().map(String::from).collect(),
        });
        outbox::enqueue(&mut *tx, PRODUCER, order_id, &event).await?;
    }
    Ok(())
}

/// The order's lines, or `None` when the event carries an invalid one.
fn parse_lines(placed: &events::OrderPlaced) -> Option<Vec<(Sku, Quantity)>> {
    if placed.lines.is_empty() {
        return None;
    }
    placed
        .lines
        .iter()
        .map(|l| Some((Sku::parse(&l.sku).ok()?, Quantity::new(l.quantity).ok()?)))
        .collect()
}

/// Moves a held reservation on (release or commit); anything else is a
/// repeated or late trigger and changes nothing.
async fn settle(
    tx: &mut PgConnection,
    order_id: OrderId,
    transition: fn(ReservationStatus) -> Option<ReservationStatus>,
) -> Result<(), HandleError> {
    let Some(current) = store::lock_reservation(&mut *tx, order_id).await? else {
        // Only if OrderPlaced was lost or is still to come. A release leaves
        // a tombstone, so a late OrderPlaced reserves nothing, and answers
        // StockReleased, so the order does not wait for stock forever.
        if transition(ReservationStatus::Reserved) == Some(ReservationStatus::Released) {
            tracing::warn!(%order_id, "release before any reservation; recording it as released");
            store::insert_reservation(
                &mut *tx,
                order_id,
                ReservationStatus::Released,
                Some("released_before_placed"),
            )
            .await?;
            let event = Event::StockReleased(events::StockReleased {});
            outbox::enqueue(&mut *tx, PRODUCER, order_id, &event).await?;
        }
        return Ok(());
    };
    let Some(next) = transition(current) else {
        return Ok(());
    };
    if next == ReservationStatus::Released {
        store::return_units(&mut *tx, order_id).await?;
        let event = Event::StockReleased(events::StockReleased {});
        outbox::enqueue(&mut *tx, PRODUCER, order_id, &event).await?;
    }
    store::set_reservation_status(&mut *tx, order_id, next).await?;
    Ok(())
}
