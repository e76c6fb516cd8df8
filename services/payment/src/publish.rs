//! Tells the other services what happened to a payment: each notice becomes
//! an event in the outbox, in the caller's transaction.

use shipshape_messaging::outbox;
use shipshape_proto::{Event, common, events};
use sqlx::PgConnection;

use crate::domain::Notice;
use crate::store::PaymentRow;

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
