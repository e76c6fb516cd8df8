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

/// A payment row as `learn`, `lock_actionable` and `lock` return it
/// (`query_as!` fills it, so the three share `from_row`).
struct Row {
    order_id: Uuid,
    payment_id: Uuid,
    amount_minor: Option<i64>,
    currency: Option<String>,
    card_token: Option<String>,
    psp_reference: Option<String>,
    attempts: i32,
    status: String,
    stock_reserved: bool,
    compensate: bool,
    capture_uncertain: bool,
    /// An expression, so sqlx cannot tell it is never NULL (`"in_flight!"`
    /// says so): with no lease, `claimed_until IS NOT NULL` makes it false.
    in_flight: bool,
}

fn from_row(row: Row) -> Option<PaymentRow> {
    Some(PaymentRow {
        order_id: row.order_id.into(),
        payment_id: row.payment_id,
        payment: Payment {
            status: PaymentStatus::parse(&row.status)?,
            has_details: row.amount_minor.is_some(),
            stock_reserved: row.stock_reserved,
            compensate: row.compensate,
            capture_uncertain: row.capture_uncertain,
            in_flight: row.in_flight,
        },
        amount_minor: row.amount_minor,
        currency: row.currency,
        card_token: row.card_token,
        psp_reference: row.psp_reference,
        attempts: row.attempts,
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
    let row = sqlx::query_as!(
        Row,
        r#"INSERT INTO payments AS p (order_id, payment_id, amount_minor, currency, card_token, stock_reserved, compensate, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'WAITING')
         ON CONFLICT (order_id) DO UPDATE SET
           amount_minor = COALESCE(p.amount_minor, EXCLUDED.amount_minor),
           currency = COALESCE(p.currency, EXCLUDED.currency),
           card_token = COALESCE(p.card_token, EXCLUDED.card_token),
           stock_reserved = p.stock_reserved OR EXCLUDED.stock_reserved,
           compensate = p.compensate OR EXCLUDED.compensate,
           updated_at = now()
         RETURNING order_id, payment_id, amount_minor, currency, card_token, psp_reference,
           attempts, status, stock_reserved, compensate, capture_uncertain,
           (claimed_until IS NOT NULL AND claimed_until > now()) AS "in_flight!""#,
        order_id.as_uuid(),
        Uuid::now_v7(),
        amount,
        currency,
        token,
        facts.stock_reserved,
        facts.compensate,
    )
    .fetch_one(conn)
    .await?;
    Ok(from_row(row))
}

/// Locks the payment if it waits for a PSP call that nobody is making.
pub async fn lock_actionable(
    conn: &mut PgConnection,
    order_id: OrderId,
) -> sqlx::Result<Option<PaymentRow>> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT order_id, payment_id, amount_minor, currency, card_token, psp_reference, attempts,
           status, stock_reserved, compensate, capture_uncertain,
           (claimed_until IS NOT NULL AND claimed_until > now()) AS "in_flight!"
         FROM payments WHERE order_id = $1
         AND status IN ('CAPTURE_PENDING', 'REFUND_PENDING') AND next_attempt_at <= now()
         AND (claimed_until IS NULL OR claimed_until <= now()) FOR UPDATE SKIP LOCKED"#,
        order_id.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(from_row))
}

/// The payment, locked (waiting for a concurrent transaction if needed).
pub async fn lock(conn: &mut PgConnection, order_id: OrderId) -> sqlx::Result<Option<PaymentRow>> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT order_id, payment_id, amount_minor, currency, card_token, psp_reference, attempts,
           status, stock_reserved, compensate, capture_uncertain,
           (claimed_until IS NOT NULL AND claimed_until > now()) AS "in_flight!"
         FROM payments WHERE order_id = $1 FOR UPDATE"#,
        order_id.as_uuid(),
    )
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
    sqlx::query!(
        "UPDATE payments SET claimed_until = now() + make_interval(secs => $2), attempts = attempts + 1, \
         capture_uncertain = capture_uncertain OR $3, updated_at = now() WHERE order_id = $1",
        order_id.as_uuid(),
        lease_secs,
        capture,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes what an event (or a superseded call's definitive answer)
/// decided; a PSP call under way keeps its lease.
pub async fn save_decision(conn: &mut PgConnection, row: &PaymentRow) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE payments SET status = $2, psp_reference = COALESCE($3, psp_reference), \
         trace_context = COALESCE($4, trace_context), updated_at = now() WHERE order_id = $1",
        row.order_id.as_uuid(),
        row.payment.status.as_str(),
        row.psp_reference.as_deref(),
        // The trace of the work that decided: a call the retry sweep makes for
        // this decision continues it.
        TraceContext::current().to_json(),
    )
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
    sqlx::query!(
        "UPDATE payments SET status = $2, capture_uncertain = $3, psp_reference = COALESCE($4, psp_reference), \
         decline_reason = COALESCE($5, decline_reason), last_error = $6, claimed_until = NULL, \
         next_attempt_at = now() + make_interval(secs => $7), updated_at = now() WHERE order_id = $1",
        row.order_id.as_uuid(),
        row.payment.status.as_str(),
        row.payment.capture_uncertain,
        row.psp_reference.as_deref(),
        call.decline_reason,
        call.error,
        call.retry_in_secs,
    )
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
    let due = sqlx::query_as!(
        DueCall,
        "SELECT order_id, trace_context FROM payments WHERE status IN ('CAPTURE_PENDING', 'REFUND_PENDING') \
         AND next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until <= now()) \
         ORDER BY next_attempt_at LIMIT $1",
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(due.into_iter().map(DueCall::into_parts).collect())
}

/// A call [`due`] found: the payment's order and the stored trace.
struct DueCall {
    order_id: Uuid,
    trace_context: Option<serde_json::Value>,
}

impl DueCall {
    fn into_parts(self) -> (OrderId, TraceContext) {
        let trace = TraceContext::from_json(self.trace_context.as_ref());
        (OrderId::from(self.order_id), trace)
    }
}
