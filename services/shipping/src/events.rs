//! Learns each order's destination, payment and cancellation from saga
//! events, and schedules (or refuses) its shipment.

use shipshape_messaging::inbox::Effect;
use shipshape_messaging::{HandleError, Incoming, outbox};
use shipshape_proto::{Event, events};
use shipshape_types::{CountryCode, OrderId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{Coverage, Notice, Shipment, ShipmentStatus};

pub const PRODUCER: &str = "shipping";

pub struct ShippingEvents {
    pool: PgPool,
    coverage: Coverage,
}

impl ShippingEvents {
    pub fn new(pool: PgPool, coverage: Coverage) -> Self {
        Self { pool, coverage }
    }
}

/// What one event teaches about an order's shipment.
#[derive(Default)]
struct Facts<'a> {
    address: Option<&'a shipshape_proto::common::Address>,
    paid: bool,
    cancelled: bool,
}

impl<'a> Facts<'a> {
    /// What `event` teaches; `None` when it concerns no shipment.
    fn of(event: &'a Event) -> Option<Self> {
        let facts = match event {
            Event::OrderPlaced(placed) => Facts {
                address: placed.shipping_address.as_ref(),
                ..Facts::default()
            },
            Event::PaymentCaptured(_) => Facts {
                paid: true,
                ..Facts::default()
            },
            Event::OrderCancelled(_) => Facts {
                cancelled: true,
                ..Facts::default()
            },
            _ => return None,
        };
        Some(facts)
    }
}

impl Effect for ShippingEvents {
    type Committed = ();

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn concerns(&self, event: &Event) -> bool {
        Facts::of(event).is_some()
    }

    async fn apply(&self, tx: &mut PgConnection, message: &Incoming) -> Result<(), HandleError> {
        let Some(facts) = Facts::of(&message.event) else {
            return Ok(());
        };
        let (shipment_id, mut shipment) = learn(tx, message.order_id, &facts).await?;
        let before = shipment.status;
        let notice = shipment.settle(&self.coverage);
        if shipment.status != before {
            save(tx, message.order_id, &shipment, notice.as_ref()).await?;
        }
        if let Some(notice) = notice {
            tracing::info!(order_id = %message.order_id, ?notice, "shipment decided");
            let event = match notice {
                Notice::Scheduled { carrier } => {
                    Event::ShipmentScheduled(events::ShipmentScheduled {
                        shipment_id: shipment_id.to_string(),
                        carrier: carrier.to_owned(),
                    })
                }
                Notice::Failed { reason } => Event::ShipmentFailed(events::ShipmentFailed {
                    reason: reason.to_owned(),
                }),
            };
            outbox::enqueue(tx, PRODUCER, message.order_id, &event).await?;
        }
        Ok(())
    }

    fn committed(&self, (): ()) {}
}

/// Records `facts` (creating the shipment on first sight) and returns it,
/// locked for the rest of the transaction.
async fn learn(
    conn: &mut PgConnection,
    order_id: OrderId,
    facts: &Facts<'_>,
) -> Result<(Uuid, Shipment), HandleError> {
    let country = facts.address.map(|a| a.country.as_str());
    let row = sqlx::query!(
        "INSERT INTO shipments AS s (order_id, shipment_id, country, shipping_address, paid, cancelled, status) \
         VALUES ($1, $2, $3, $4, $5, $6, 'WAITING') \
         ON CONFLICT (order_id) DO UPDATE SET \
           country = COALESCE(s.country, EXCLUDED.country), \
           shipping_address = COALESCE(s.shipping_address, EXCLUDED.shipping_address), \
           paid = s.paid OR EXCLUDED.paid, cancelled = s.cancelled OR EXCLUDED.cancelled, \
           updated_at = now() \
         RETURNING shipment_id, country, paid, cancelled, status",
        order_id.as_uuid(),
        Uuid::now_v7(),
        country,
        facts.address.map(|a| serde_json::json!({
            "name": a.name, "line1": a.line1, "line2": a.line2,
            "city": a.city, "postal_code": a.postal_code, "country": a.country,
        })),
        facts.paid,
        facts.cancelled,
    )
    .fetch_one(conn)
    .await?;
    let status = ShipmentStatus::parse(&row.status)
        .ok_or_else(|| HandleError::Other(format!("shipment has unknown status {}", row.status)))?;
    // A malformed country is an unserved one: the shipment fails, visibly.
    let destination = row
        .country
        .map(|c| CountryCode::parse(&c).unwrap_or(CountryCode::UNKNOWN));
    Ok((
        row.shipment_id,
        Shipment {
            status,
            destination,
            paid: row.paid,
            cancelled: row.cancelled,
        },
    ))
}

async fn save(
    conn: &mut PgConnection,
    order_id: OrderId,
    shipment: &Shipment,
    notice: Option<&Notice>,
) -> sqlx::Result<()> {
    let (carrier, reason) = match notice {
        Some(Notice::Scheduled { carrier }) => (Some(*carrier), None),
        Some(Notice::Failed { reason }) => (None, Some(*reason)),
        None => (None, None),
    };
    sqlx::query!(
        "UPDATE shipments SET status = $2, carrier = COALESCE($3, carrier), \
         failure_reason = COALESCE($4, failure_reason), updated_at = now() WHERE order_id = $1",
        order_id.as_uuid(),
        shipment.status.as_str(),
        carrier,
        reason,
    )
    .execute(conn)
    .await?;
    Ok(())
}
