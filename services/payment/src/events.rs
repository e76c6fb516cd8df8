//! Learns from saga events what each payment needs, and tells the other
//! services what happened to it.

use std::sync::Arc;

use shipshape_messaging::inbox::Effect;
use shipshape_messaging::{HandleError, Incoming};
use shipshape_proto::Event;
use shipshape_telemetry::TraceContext;
use shipshape_types::OrderId;
use sqlx::{PgConnection, PgPool};

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

/// What one event teaches about an order's payment; `None` when it
/// concerns no payment.
fn facts(event: &Event) -> Option<Result<Facts<'_>, HandleError>> {
    let facts = match event {
        Event::OrderPlaced(placed) => match &placed.total {
            Some(total) => Facts {
                details: Some((total.amount_minor, &total.currency, &placed.card_token)),
                ..Facts::default()
            },
            None => {
                return Some(Err(HandleError::Other(
                    "OrderPlaced without a total".into(),
                )));
            }
        },
        Event::StockReserved(_) => Facts {
            stock_reserved: true,
            ..Facts::default()
        },
        Event::OrderCancelled(_) | Event::ShipmentFailed(_) => Facts {
            compensate: true,
            ..Facts::default()
        },
        _ => return None,
    };
    Some(Ok(facts))
}

/// A payment whose PSP call the driver is to make once the decision to
/// make it is committed, with the trace of the event that decided it.
pub struct Due {
    order_id: OrderId,
    trace: TraceContext,
}

impl Effect for PaymentEvents {
    type Committed = Option<Due>;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn concerns(&self, event: &Event) -> bool {
        facts(event).is_some()
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        message: &Incoming,
    ) -> Result<Option<Due>, HandleError> {
        let Some(facts) = facts(&message.event).transpose()? else {
            return Ok(None);
        };
        let Some(mut row) = store::learn(tx, message.order_id, &facts).await? else {
            return Err(HandleError::Other(
                "payment row has an unknown status".into(),
            ));
        };
        let notices = row.payment.settle();
        store::save_decision(tx, &row).await?;
        publish(tx, &row, &notices).await?;
        Ok(row.payment.pending_call().is_some().then(|| Due {
            order_id: row.order_id,
            trace: TraceContext::current(),
        }))
    }

    fn committed(&self, due: Option<Due>) {
        if let Some(Due { order_id, trace }) = due {
            self.driver.kick(order_id, &trace);
        }
    }
}
