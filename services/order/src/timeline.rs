//! The order timeline: every saga step of every order, as a person follows
//! a checkout (placed, stock reserved, payment captured, ..., confirmed, or
//! the compensations and the cancellation). It is a read model made from the
//! events (CQRS): one row per event, never updated.
//!
//! Rows are written in the transaction that applies a consumed event or
//! emits one of the order's own, so a timeline never disagrees with the
//! order's status. [`rebuild`] empties the table and fills it again from the
//! four event topics; both paths make a row from an event with [`Entry::of`],
//! so a rebuilt timeline is the timeline that was live.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shipshape_messaging::replay::{self, Replayed};
use shipshape_messaging::{Incoming, KafkaSettings};
use shipshape_proto::order::{OrderTimeline, TimelineEntry};
use shipshape_proto::{Event, ORDER_ROLE, common};
use shipshape_telemetry::TraceContext;
use shipshape_types::{Money, OrderId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store;

/// The channel told the order id of every row written (at commit), for the
/// live streams.
pub const CHANNEL: &str = "shipshape_order_timeline";
/// Serialises rebuilds, across replicas.
const REBUILD_LOCK_KEY: i64 = 0x5348_4950_5449_4d45; // "SHIPTIME"
/// How long a rebuild waits for events written before it to be published.
const OUTBOX_DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long a rebuild may take to read the topics.
const REPLAY_LIMIT: Duration = Duration::from_secs(300);

/// One timeline row, made from one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub event_id: Uuid,
    pub order_id: OrderId,
    pub event_type: &'static str,
    pub service: String,
    pub occurred_at_micros: i64,
    pub detail: String,
    pub compensation: bool,
    pub trace_id: Option<String>,
}

impl Entry {
    /// The row of `incoming`, which travelled in `trace`.
    pub fn of(incoming: &Incoming, trace: &TraceContext) -> Self {
        Self {
            event_id: incoming.event_id,
            order_id: incoming.order_id,
            event_type: incoming.event.type_name(),
            service: incoming.producer.clone(),
            occurred_at_micros: incoming.occurred_at_micros,
            detail: detail(&incoming.event),
            compensation: is_compensation(&incoming.event),
            trace_id: trace.trace_id().map(str::to_owned),
        }
    }
}

/// A step that undoes an earlier one.
pub fn is_compensation(event: &Event) -> bool {
    matches!(
        event,
        Event::StockReleased(_) | Event::PaymentRefunded(_) | Event::PaymentVoided(_)
    )
}

/// What `event` says beyond its name, for a person reading the timeline.
pub fn detail(event: &Event) -> String {
    match event {
        Event::OrderPlaced(placed) => {
            let units: i64 = placed.lines.iter().map(|line| line.quantity).sum();
            let total = placed.total.as_ref().map(amount).unwrap_or_default();
            format!("{units} item(s), {total}")
        }
        Event::OrderCancelled(cancelled) => cancelled.reason.clone(),
        Event::StockRejected(rejected) if rejected.skus.is_empty() => rejected.reason.clone(),
        Event::StockRejected(rejected) => {
            format!("{}: {}", rejected.reason, rejected.skus.join(", "))
        }
        Event::PaymentCaptured(captured) => {
            let amount = captured.amount.as_ref().map(amount).unwrap_or_default();
            format!("{amount}, reference {}", captured.psp_reference)
        }
        Event::PaymentDeclined(declined) => declined.reason.clone(),
        Event::PaymentRefunded(refunded) => {
            refunded.amount.as_ref().map(amount).unwrap_or_default()
        }
        Event::PaymentVoided(_) => "nothing was charged".to_owned(),
        Event::ShipmentScheduled(scheduled) => format!("carrier {}", scheduled.carrier),
        Event::ShipmentFailed(failed) => failed.reason.clone(),
        Event::OrderConfirmed(_) | Event::StockReserved(_) | Event::StockReleased(_) => {
            String::new()
        }
    }
}

/// `money` in its major unit (`49.80 EUR`); as sent when its currency is
/// not a currency.
fn amount(money: &common::Money) -> String {
    Money::try_from(money).map_or_else(
        |_| format!("{} {}", money.amount_minor, money.currency),
        |money| money.to_string(),
    )
}

/// Records `entry` unless it is recorded already (a redelivery, or a
/// rebuild meeting a live row) or its order is unknown here; returns
/// whether it did. Listeners on [`CHANNEL`] hear of it when the transaction
/// commits.
pub async fn record(conn: &mut PgConnection, entry: &Entry) -> sqlx::Result<bool> {
    sqlx::query!(
        "WITH row AS ( \
             INSERT INTO order_timeline (event_id, order_id, event_type, service, \
                 occurred_at_micros, detail, compensation, trace_id) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE EXISTS (SELECT 1 FROM orders WHERE order_id = $2) \
             ON CONFLICT (event_id) DO NOTHING \
             RETURNING order_id) \
         SELECT pg_notify($9, order_id::text) AS notified FROM row",
        entry.event_id,
        entry.order_id.as_uuid(),
        entry.event_type,
        entry.service,
        entry.occurred_at_micros,
        entry.detail,
        entry.compensation,
        entry.trace_id,
        CHANNEL,
    )
    .fetch_optional(conn)
    .await
    .map(|written| written.is_some())
}

/// Records the entry of `incoming`, which travels in the current span's
/// trace.
pub async fn record_current(conn: &mut PgConnection, incoming: &Incoming) -> sqlx::Result<()> {
    record(conn, &Entry::of(incoming, &TraceContext::current())).await?;
    Ok(())
}

/// The timeline of `order_id` and the customer who owns the order, with the
/// entries after `after` (a sequence; 0 for all) in the order they
/// happened; `None` for an unknown order.
pub async fn load(
    conn: &mut PgConnection,
    order_id: OrderId,
    after: i64,
) -> sqlx::Result<Option<(String, OrderTimeline)>> {
    let Some(order) = sqlx::query!(
        "SELECT customer_id, status, cancellation_reason, \
         (EXTRACT(EPOCH FROM deadline_at) * 1000000)::bigint AS \"deadline_at_micros!\" \
         FROM orders WHERE order_id = $1",
        order_id.as_uuid(),
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let entries = sqlx::query_as!(
        EntryRow,
        "SELECT sequence, event_id, event_type, service, occurred_at_micros, detail, \
         compensation, trace_id FROM order_timeline \
         WHERE order_id = $1 AND sequence > $2 \
         ORDER BY occurred_at_micros, sequence",
        order_id.as_uuid(),
        after,
    )
    .fetch_all(&mut *conn)
    .await?;
    let timeline = OrderTimeline {
        order_id: order_id.to_string(),
        status: store::api_status(&order.status) as i32,
        cancellation_reason: order.cancellation_reason.unwrap_or_default(),
        deadline_at_micros: order.deadline_at_micros,
        entries: entries.into_iter().map(TimelineEntry::from).collect(),
    };
    Ok(Some((order.customer_id, timeline)))
}

struct EntryRow {
    sequence: i64,
    event_id: Uuid,
    event_type: String,
    service: String,
    occurred_at_micros: i64,
    detail: String,
    compensation: bool,
    trace_id: Option<String>,
}

impl From<EntryRow> for TimelineEntry {
    fn from(row: EntryRow) -> Self {
        Self {
            sequence: row.sequence,
            event_id: row.event_id.to_string(),
            event_type: row.event_type,
            service: row.service,
            occurred_at_micros: row.occurred_at_micros,
            detail: row.detail,
            compensation: row.compensation,
            trace_id: row.trace_id.unwrap_or_default(),
        }
    }
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug)]
pub struct Rebuilt {
    /// Messages read from the topics.
    pub events_read: u64,
    /// Rows written from them (events of unknown orders are skipped, and
    /// rows written live meanwhile are kept).
    pub entries_written: u64,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("another rebuild of the order timelines is running")]
    AlreadyRunning,
    #[error("events written before the rebuild were not published within {0:?}; is the broker up?")]
    OutboxNotDraining(Duration),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("reading the event topics: {0:#}")]
    Replay(anyhow::Error),
}

/// Empties the timelines and fills them again from every event topic, read
/// from its beginning (as far back as the topics keep events). One rebuild
/// runs at a time across replicas. The saga goes on meanwhile and writes
/// its rows as usual: a row written both live and by the rebuild is kept
/// once, and a timeline read during the rebuild may be incomplete. A
/// rebuild that fails part way (the broker unreachable, the caller gone)
/// leaves the timelines incomplete until one succeeds: it can always be run
/// again.
pub async fn rebuild(pool: &PgPool, kafka: &KafkaSettings) -> Result<Rebuilt, RebuildError> {
    let started = Instant::now();
    // Held by a transaction rather than the session: if the caller goes
    // away mid-rebuild, the rollback frees it.
    let mut guard = pool.begin().await?;
    let locked = sqlx::query_scalar!(
        "SELECT pg_try_advisory_xact_lock($1) AS \"locked!\"",
        REBUILD_LOCK_KEY
    )
    .fetch_one(&mut *guard)
    .await?;
    if !locked {
        return Err(RebuildError::AlreadyRunning);
    }
    let cutoff = sqlx::query_scalar!(
        "WITH emptied AS (DELETE FROM order_timeline) SELECT clock_timestamp() AS \"cutoff!\""
    )
    .fetch_one(pool)
    .await?;
    // The order's own events of transactions committed before the rows were
    // deleted may still wait in the outbox: once published, the topics hold
    // them. Events written later record their rows themselves.
    let drained = tokio::time::Instant::now() + OUTBOX_DRAIN_LIMIT;
    while sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE created_at <= $1) AS \"waiting!\"",
        cutoff
    )
    .fetch_one(pool)
    .await?
    {
        if tokio::time::Instant::now() >= drained {
            return Err(RebuildError::OutboxNotDraining(OUTBOX_DRAIN_LIMIT));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written = AtomicU64::new(0);
    let read = replay::replay(kafka, ORDER_ROLE.replays, REPLAY_LIMIT, |batch| {
        let written = &written;
        async move {
            written.fetch_add(write_batch(pool, &batch).await?, Ordering::Relaxed);
            Ok(())
        }
    })
    .await
    .map_err(|error| match error.downcast::<sqlx::Error>() {
        Ok(database) => RebuildError::Database(database),
        Err(other) => RebuildError::Replay(other),
    })?;
    guard.commit().await?;
    Ok(Rebuilt {
        events_read: read.messages,
        entries_written: written.into_inner(),
        took: started.elapsed(),
    })
}

/// Records a batch of replayed events in one transaction; returns how many
/// rows it added.
async fn write_batch(pool: &PgPool, batch: &[Replayed]) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let mut written = 0;
    for replayed in batch {
        if record(&mut tx, &Entry::of(&replayed.incoming, &replayed.trace)).await? {
            written += 1;
        }
    }
    tx.commit().await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use shipshape_messaging::envelope;
    use shipshape_proto::events;

    use super::*;

    fn money(amount_minor: i64, currency: &str) -> Option<common::Money> {
        Some(common::Money {
            amount_minor,
            currency: currency.to_owned(),
        })
    }

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn an_entry_keeps_the_events_identity_time_producer_and_trace() {
        let order_id = OrderId::generate();
        let incoming = envelope::stamp(
            "payment",
            order_id,
            Event::PaymentDeclined(events::PaymentDeclined {
                reason: "card_declined".to_owned(),
            }),
        );
        let trace = TraceContext::from_pairs([("traceparent", TRACE.as_bytes())]);
        let entry = Entry::of(&incoming, &trace);
        assert_eq!(entry.event_id, incoming.event_id);
        assert_eq!(entry.order_id, order_id);
        assert_eq!(entry.event_type, "PaymentDeclined");
        assert_eq!(entry.service, "payment");
        assert_eq!(entry.occurred_at_micros, incoming.occurred_at_micros);
        assert_eq!(entry.detail, "card_declined");
        assert!(!entry.compensation);
        assert_eq!(
            entry.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            Entry::of(&incoming, &TraceContext::default()).trace_id,
            None
        );
    }

    #[test]
    fn the_entry_of_an_event_is_the_same_live_and_replayed() {
        let incoming = envelope::stamp(
            "order",
            OrderId::generate(),
            Event::OrderCancelled(events::OrderCancelled {
                reason: "timed_out".to_owned(),
            }),
        );
        let trace = TraceContext::from_pairs([("traceparent", TRACE.as_bytes())]);
        let replayed = envelope::open(&prost::Message::encode_to_vec(&incoming.envelope()))
            .expect("a sealed event opens");
        assert_eq!(Entry::of(&incoming, &trace), Entry::of(&replayed, &trace));
    }

    #[test]
    fn releases_refunds_and_voids_are_the_compensations() {
        let compensations: Vec<&str> = [
            Event::OrderPlaced(Default::default()),
            Event::OrderConfirmed(Default::default()),
            Event::OrderCancelled(Default::default()),
            Event::StockReserved(Default::default()),
            Event::StockRejected(Default::default()),
            Event::StockReleased(Default::default()),
            Event::PaymentCaptured(Default::default()),
            Event::PaymentDeclined(Default::default()),
            Event::PaymentRefunded(Default::default()),
            Event::PaymentVoided(Default::default()),
            Event::ShipmentScheduled(Default::default()),
            Event::ShipmentFailed(Default::default()),
        ]
        .iter()
        .filter(|event| is_compensation(event))
        .map(Event::type_name)
        .collect();
        assert_eq!(
            compensations,
            ["StockReleased", "PaymentRefunded", "PaymentVoided"]
        );
    }

    #[test]
    fn details_say_what_the_event_adds_to_its_name() {
        let cases = [
            (
                Event::OrderPlaced(events::OrderPlaced {
                    lines: vec![
                        events::OrderLine {
                            quantity: 2,
                            ..Default::default()
                        },
                        events::OrderLine {
                            quantity: 1,
                            ..Default::default()
                        },
                    ],
                    total: money(7470, "EUR"),
                    ..Default::default()
                }),
                "3 item(s), 74.70 EUR",
            ),
            (
                Event::StockRejected(events::StockRejected {
                    reason: "out_of_stock".to_owned(),
                    skus: vec!["SKU-0001".to_owned(), "SKU-0002".to_owned()],
                }),
                "out_of_stock: SKU-0001, SKU-0002",
            ),
            (
                Event::PaymentCaptured(events::PaymentCaptured {
                    payment_id: "p".to_owned(),
                    amount: money(1205, "EUR"),
                    psp_reference: "psp_42".to_owned(),
                }),
                "12.05 EUR, reference psp_42",
            ),
            (
                Event::PaymentRefunded(events::PaymentRefunded {
                    payment_id: "p".to_owned(),
                    amount: money(1200, "JPY"),
                }),
                "1200 JPY",
            ),
            (
                Event::PaymentVoided(Default::default()),
                "nothing was charged",
            ),
            (
                Event::ShipmentScheduled(events::ShipmentScheduled {
                    shipment_id: "s".to_owned(),
                    carrier: "DHL".to_owned(),
                }),
                "carrier DHL",
            ),
            (
                Event::ShipmentFailed(events::ShipmentFailed {
                    reason: "unsupported_country".to_owned(),
                }),
                "unsupported_country",
            ),
            (Event::StockReserved(Default::default()), ""),
        ];
        for (event, expected) in cases {
            assert_eq!(detail(&event), expected, "{}", event.type_name());
        }
    }
}
