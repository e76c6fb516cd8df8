//! Learns from saga events what each payment needs, and tells the other
//! services what happened to it.

use std::sync::Arc;

use shipshape_messaging::{HandleError, Handler, Incoming, inbox};
use shipshape_proto::Event;
use shipshape_telemetry::TraceContext;
use sqlx::PgPool;

use crate::driver::Driver;
use crate::publish::publish;
use crate::store::{self, Facts};

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
        let Some(mut tx) = inbox::begin(&self.pool, &message).await? else {
            return Ok(());
        };
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
