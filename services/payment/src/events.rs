//! Learns from saga events what each payment needs, and tells the other
//! services what happened to it.

use std::sync::Arc;

use shipshape_messaging::{HandleError, Handler, Incoming, inbox, outbox};
use shipshape_proto::{Event, common, events};
use shipshape_telemetry::TraceContext;
use sqlx::{PgConnection, PgPool};

use crate::domain::Notice;
use crate::driver::Driver;
use crate::store::{self, Facts, PaymentRow};

pub const PRODUCER: &str = "payment";

/// The event announcing `notice` about `row`'s payment.
pub fn announce(row: &PaymentRow, notice: &Notice) -> Event {
    let amount = row
        .amount_minor
        .zip(row.currency.clone())
        .map(|(amount_minor, currency)| common::Money {
            amount_minor,
            currency,
        });
    let payment_id = row.payment_id.to_string();
    match notice {
        Notice::Captured => Event::PaymentCaptured(events::PaymentCaptured {
            payment_id,
            amount,
            psp_reference: row.psp_reference.clone().unwrap_or_default(),
        }),
        Notice::Declined(reason) => Event::PaymentDeclined(events::PaymentDeclined {
            reason: reason.clone(),
        }),
        Notice::Refunded => Event::PaymentRefunded(events::PaymentRefunded { payment_id, amount }),
        Notice::Voided => Event::PaymentVoided(events::PaymentVoided {}),
    }
}

pub async fn publish(
    conn: &mut PgConnection,
    row: &PaymentRow,
    notices: &[Notice],
) -> sqlx::Result<()> {
    for notice in notices {
        tracing::info!(order_id = %row.order_id, ?notice, "payment update");
        outbox::enqueue(&mut *conn, PRODUCER, row.order_id, &announce(row, notice)).await?;
    }
    Ok(())
}

pub struct PaymentEvents {
    pool: PgPool,
    driver: Arc<Driver>,
}

impl PaymentEvents {
    pub fn new(pool: PgPool, driver: Arc<Driver>) -> Self {
        Self { pool, driver }
    }
}

impl Handler for PaymentEvents {
    async fn handle(&self, message: Incoming) -> Result<(), HandleError> {
        let facts = match &message.event {
            Event::OrderPlaced(placed) => match &placed.total {
                Some(total) => Facts {
                    details: Some((total.amount_minor, &total.currency, &placed.card_token)),
                    ..Facts::default()
                },
                None => return Err(HandleError::Other("OrderPlaced without a total".into())),
            },
            Event::StockReserved(_) => Facts {
                stock_reserved: true,
                ..Facts::default()
            },
            Event::OrderCancelled(_) | Event::ShipmentFailed(_) => Facts {
                compensate: true,
                ..Facts::default()
            },
            _ => return Ok(()),
        };
        let mut tx = self.pool.begin().await?;
        if !inbox::first_delivery(&mut tx, message.event_id, message.event.type_name()).await? {
            return Ok(());
        }
        let Some(mut row) = store::learn(&mut tx, message.order_id, &facts).await? else {
            return Err(HandleError::Other(
                "payment row has an unknown status".into(),
            ));
        };
        let notices = row.payment.settle();
        store::save_decision(&mut tx, &row).await?;
        publish(&mut tx, &row, &notices).await?;
        tx.commit().await?;
        if row.payment.pending_call().is_some() {
            self.driver.kick(row.order_id, &TraceContext::current());
        }
        Ok(())
    }
}
