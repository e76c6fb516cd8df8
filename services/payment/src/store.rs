//! Postgres access for payments.

use shipshape_telemetry::TraceContext;
use shipshape_types::OrderId;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Payment, PaymentStatus};

/// A payment row as the service works with it.
#[derive(Clone, Debug)]
pub struct PaymentRow {
    pub order_id: OrderId,
    pub payment_id: Uuid,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub card_token: Option<String>,
    pub psp_reference: Option<String>,
    pub attempts: i32,
    pub payment: Payment,
}

/// What one event teaches about an order's payment.
#[derive(Default)]
pub struct Facts<'a> {
    pub details: Option<(i64, &'a str, &'a str)>,
    pub stock_reserved: bool,
    pub compensate: bool,
}

type Row = (
    Uuid,
    Uuid,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    i32,
    String,
    bool,
    bool,
    bool,
    bool,
);

const COLUMNS: &str = "order_id, payment_id, amount_minor, currency, card_token, psp_reference, attempts, \
    status, stock_reserved, compensate, capture_uncertain, \
    (claimed_until IS NOT NULL AND claimed_until > now()) AS in_flight";

fn from_row(row: Row) -> Option<PaymentRow> {
    let (
        order_id,
        payment_id,
        amount_minor,
        currency,
        card_token,
        psp_reference,
        attempts,
        status,
        stock,
        compensate,
        uncertain,
        in_flight,
    ) = row;
    Some(PaymentRow {
        order_id: order_id.into(),
        payment_id,
        payment: Payment {
            status: PaymentStatus::parse(&status)?,
            has_details: amount_minor.is_some(),
            stock_reserved: stock,
            compensate,
            capture_uncertain: uncertain,
            in_flight,
        },
        amount_minor,
        currency,
        card_token,
        psp_reference,
        attempts,
    })
}

/// Records `facts` (creating the payment on first sight) and returns the
/// row, locked for the rest of the transaction. Facts only accumulate.
pub async fn learn(
    conn: &mut PgConnection,
    order_id: OrderId,
    facts: &Facts<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    let (amount, currency, token) = match facts.details {
        Some((a, c, t)) => (Some(a), Some(c), Some(t)),
        None => (None, None, None),
    };
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO payments AS p (order_id, payment_id, amount_minor, currency, card_token, stock_reserved, compensate, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'WAITING') \
         ON CONFLICT (order_id) DO UPDATE SET \
           amount_minor = COALESCE(p.amount_minor, EXCLUDED.amount_minor), \
           currency = COALESCE(p.currency, EXCLUDED.currency), \
           card_token = COALESCE(p.card_token, EXCLUDED.card_token), \
           stock_reserved = p.stock_reserved OR EXCLUDED.stock_reserved, \
           compensate = p.compensate OR EXCLUDED.compensate, \
           updated_at = now() \
         RETURNING {COLUMNS}"
    ))
    .bind(order_id.as_uuid())
    .bind(Uuid::now_v7())
    .bind(amount)
    .bind(currency)
    .bind(token)
    .bind(facts.stock_reserved)
    .bind(facts.compensate)
    .fetch_one(conn)
    .await?;
    Ok(from_row(row))
}

/// Locks the payment if it waits for a PSP call that nobody is making.
pub async fn lock_actionable(
    conn: &mut PgConnection,
    order_id: OrderId,
) -> sqlx::Result<Option<PaymentRow>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1 \
         AND status IN ('CAPTURE_PENDING', 'REFUND_PENDING') AND next_attempt_at <= now() \
         AND (claimed_until IS NULL OR claimed_until <= now()) FOR UPDATE SKIP LOCKED"
    ))
    .bind(order_id.as_uuid())
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(from_row))
}

/// The payment, locked (waiting for a concurrent transaction if needed).
pub async fn lock(conn: &mut PgConnection, order_id: OrderId) -> sqlx::Result<Option<PaymentRow>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1 FOR UPDATE"
    ))
    .bind(order_id.as_uuid())
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(from_row))
}

/// Takes the lease for one PSP call. A capture attempt is marked uncertain
/// before it is made, so a crash during the call can never lead to a void.
pub async fn claim(
    conn: &mut PgConnection,
    order_id: OrderId,
    lease_secs: f64,
    capture: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payments SET claimed_until = now() + make_interval(secs => $2), attempts = attempts + 1, \
         capture_uncertain = capture_uncertain OR $3, updated_at = now() WHERE order_id = $1",
    )
    .bind(order_id.as_uuid())
    .bind(lease_secs)
    .bind(capture)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes what an event (or a superseded call's definitive answer)
/// decided; a PSP call under way keeps its lease.
pub async fn save_decision(conn: &mut PgConnection, row: &PaymentRow) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payments SET status = $2, psp_reference = COALESCE($3, psp_reference), \
         trace_context = COALESCE($4, trace_context), updated_at = now() WHERE order_id = $1",
    )
    .bind(row.order_id.as_uuid())
    .bind(row.payment.status.as_str())
    .bind(row.psp_reference.as_deref())
    // The trace of the work that decided: a call the retry sweep makes for
    // this decision continues it.
    .bind(TraceContext::current().to_json())
    .execute(conn)
    .await?;
    Ok(())
}

/// The outcome of one PSP call.
pub struct CallRecord<'a> {
    pub decline_reason: Option<&'a str>,
    pub error: Option<&'a str>,
    pub retry_in_secs: f64,
}

/// Writes the payment after a PSP answer and releases the lease.
pub async fn save_answer(
    conn: &mut PgConnection,
    row: &PaymentRow,
    call: &CallRecord<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payments SET status = $2, capture_uncertain = $3, psp_reference = COALESCE($4, psp_reference), \
         decline_reason = COALESCE($5, decline_reason), last_error = $6, claimed_until = NULL, \
         next_attempt_at = now() + make_interval(secs => $7), updated_at = now() WHERE order_id = $1",
    )
    .bind(row.order_id.as_uuid())
    .bind(row.payment.status.as_str())
    .bind(row.payment.capture_uncertain)
    .bind(row.psp_reference.as_deref())
    .bind(call.decline_reason)
    .bind(call.error)
    .bind(call.retry_in_secs)
    .execute(conn)
    .await?;
    Ok(())
}

/// Payments waiting for a PSP call whose retry time has come, with the
/// trace of the decision that asked for the call.
pub async fn due(
    conn: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Vec<(OrderId, TraceContext)>> {
    let rows: Vec<(Uuid, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT order_id, trace_context FROM payments WHERE status IN ('CAPTURE_PENDING', 'REFUND_PENDING') \
         AND next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until <= now()) \
         ORDER BY next_attempt_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, trace)| (OrderId::from(id), TraceContext::from_json(trace.as_ref())))
        .collect())
}
