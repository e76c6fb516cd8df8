//! Postgres access for orders and their saga state.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shipshape_proto::{common, order};
use shipshape_telemetry::TraceContext;
use shipshape_types::{Money, OrderId, ShippingAddress};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::listing::{Cursor, Page};
use crate::placement::{OrderRequest, PricedLine};
use crate::saga::{CancelReason, OrderStatus, PaymentState, Saga, ShipmentState, StockState};

/// A new order as it is written.
pub struct NewOrder<'a> {
    pub order_id: OrderId,
    pub request: &'a OrderRequest,
    pub lines: &'a [PricedLine],
    pub total: Money,
    pub fingerprint: &'a [u8],
    /// Seconds from now (the database's clock, which the deadline sweeper also
    /// uses) until the saga times out.
    pub deadline_secs: f64,
}

/// Inserts the order unless its idempotency key is taken; `false` then.
pub async fn insert_order(conn: &mut PgConnection, new: &NewOrder<'_>) -> sqlx::Result<bool> {
    let saga = Saga::placed();
    let inserted = sqlx::query!(
        "INSERT INTO orders (order_id, customer_id, status, stock_state, payment_state, shipment_state, \
         total_minor, currency, shipping_address, idempotency_key, request_fingerprint, deadline_at, \
         trace_context) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now() + make_interval(secs => $12), $13) \
         ON CONFLICT (customer_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        new.order_id.as_uuid(),
        &new.request.customer_id,
        saga.status.as_str(),
        saga.stock.as_str(),
        saga.payment.as_str(),
        saga.shipment.as_str(),
        new.total.amount_minor,
        new.total.currency.as_str(),
        // Bound as the address itself; the macro would otherwise ask for a
        // `serde_json::Value`.
        Json(&new.request.address) as _,
        new.request.idempotency_key.as_deref(),
        new.fingerprint,
        new.deadline_secs,
        // The placing request's trace, which the deadline continues.
        TraceContext::current().to_json(),
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    let positions: Vec<i32> = (0..new.lines.len() as i32).collect();
    let skus: Vec<&str> = new.lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i64> = new.lines.iter().map(|l| l.quantity.get()).collect();
    let prices: Vec<i64> = new
        .lines
        .iter()
        .map(|l| l.unit_price.amount_minor)
        .collect();
    sqlx::query!(
        "INSERT INTO order_lines (order_id, position, sku, quantity, unit_price_minor) \
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::bigint[], $5::bigint[])",
        new.order_id.as_uuid(),
        &positions,
        // The macro checks a text[] against `&[String]`; borrowed names
        // encode the same.
        &skus as &[&str],
        &quantities,
        &prices,
    )
    .execute(conn)
    .await?;
    Ok(true)
}

/// The order stored under an idempotency key, with its request fingerprint.
pub async fn find_by_idempotency_key(
    pool: &PgPool,
    customer_id: &str,
    key: &str,
) -> sqlx::Result<Option<(OrderId, Vec<u8>)>> {
    let row = sqlx::query!(
        "SELECT order_id, request_fingerprint FROM orders WHERE customer_id = $1 AND idempotency_key = $2",
        customer_id,
        key,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| {
        (
            row.order_id.into(),
            row.request_fingerprint.unwrap_or_default(),
        )
    }))
}

/// An order as the queries that show orders select it; `query_as!` fills
/// it by column name.
struct OrderRow {
    order_id: Uuid,
    customer_id: String,
    status: String,
    cancellation_reason: Option<String>,
    total_minor: i64,
    currency: String,
    shipping_address: Json<ShippingAddress>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

/// An order line, in the order's currency.
struct LineRow {
    sku: String,
    quantity: i64,
    unit_price_minor: i64,
}

/// The order as the API shows it.
pub async fn load_order(
    conn: &mut PgConnection,
    order_id: OrderId,
) -> sqlx::Result<Option<order::Order>> {
    let row = sqlx::query_as!(
        OrderRow,
        "SELECT order_id, customer_id, status, cancellation_reason, total_minor, currency, \
         shipping_address AS \"shipping_address: Json<ShippingAddress>\", \
         created_at, updated_at, completed_at \
         FROM orders WHERE order_id = $1",
        order_id.as_uuid(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let lines = sqlx::query_as!(
        LineRow,
        "SELECT sku, quantity, unit_price_minor FROM order_lines WHERE order_id = $1 ORDER BY position",
        row.order_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(shown(row, lines)))
}

/// One page of `customer_id`'s orders, newest first, and the cursor of the
/// next page if there is one. Two queries, whatever the page size.
pub async fn list_orders(
    pool: &PgPool,
    customer_id: &str,
    page: &Page,
) -> sqlx::Result<(Vec<order::Order>, Option<Cursor>)> {
    // One row more than the page: if it comes, there is a next page.
    let limit = i64::from(page.size) + 1;
    let mut rows =
        match &page.after {
            None => sqlx::query_as!(
                OrderRow,
                "SELECT order_id, customer_id, status, cancellation_reason, total_minor, currency, \
                 shipping_address AS \"shipping_address: Json<ShippingAddress>\", \
                 created_at, updated_at, completed_at \
                 FROM orders WHERE customer_id = $1 \
                 ORDER BY created_at DESC, order_id DESC LIMIT $2",
                customer_id,
                limit,
            )
            .fetch_all(pool)
            .await?,
            Some(after) => sqlx::query_as!(
                OrderRow,
                "SELECT order_id, customer_id, status, cancellation_reason, total_minor, currency, \
                 shipping_address AS \"shipping_address: Json<ShippingAddress>\", \
                 created_at, updated_at, completed_at \
                 FROM orders WHERE customer_id = $1 \
                 AND (created_at, order_id) < ($2, $3) \
                 ORDER BY created_at DESC, order_id DESC LIMIT $4",
                customer_id,
                after.created_at,
                after.order_id,
                limit,
            )
            .fetch_all(pool)
            .await?,
        };
    let next = if rows.len() > page.size as usize {
        rows.truncate(page.size as usize);
        rows.last().map(|row| Cursor {
            created_at: row.created_at,
            order_id: row.order_id,
        })
    } else {
        None
    };
    let ids: Vec<Uuid> = rows.iter().map(|row| row.order_id).collect();
    let lines = sqlx::query!(
        "SELECT order_id, sku, quantity, unit_price_minor FROM order_lines \
         WHERE order_id = ANY($1) ORDER BY order_id, position",
        &ids,
    )
    .fetch_all(pool)
    .await?;
    let mut lines_of: HashMap<Uuid, Vec<LineRow>> = HashMap::new();
    for line in lines {
        lines_of.entry(line.order_id).or_default().push(LineRow {
            sku: line.sku,
            quantity: line.quantity,
            unit_price_minor: line.unit_price_minor,
        });
    }
    let orders = rows
        .into_iter()
        .map(|row| {
            let lines = lines_of.remove(&row.order_id).unwrap_or_default();
            shown(row, lines)
        })
        .collect();
    Ok((orders, next))
}

/// A stored status as the API names it.
pub fn api_status(stored: &str) -> order::OrderStatus {
    match OrderStatus::parse(stored) {
        Some(OrderStatus::Pending) => order::OrderStatus::Pending,
        Some(OrderStatus::Confirmed) => order::OrderStatus::Confirmed,
        Some(OrderStatus::Cancelling) => order::OrderStatus::Cancelling,
        Some(OrderStatus::Cancelled) => order::OrderStatus::Cancelled,
        None => order::OrderStatus::Unspecified,
    }
}

fn shown(row: OrderRow, lines: Vec<LineRow>) -> order::Order {
    let OrderRow {
        order_id,
        customer_id,
        status,
        cancellation_reason,
        total_minor,
        currency,
        shipping_address,
        created_at,
        updated_at,
        completed_at,
    } = row;
    let money = |amount_minor| common::Money {
        amount_minor,
        currency: currency.clone(),
    };
    let status = api_status(&status);
    order::Order {
        order_id: order_id.to_string(),
        customer_id,
        status: status as i32,
        cancellation_reason: cancellation_reason.unwrap_or_default(),
        lines: lines
            .into_iter()
            .map(|line| order::OrderLine {
                sku: line.sku,
                quantity: line.quantity,
                unit_price: Some(money(line.unit_price_minor)),
            })
            .collect(),
        total: Some(money(total_minor)),
        shipping_address: Some(shipping_address.0.into()),
        created_at_micros: created_at.timestamp_micros(),
        updated_at_micros: updated_at.timestamp_micros(),
        completed_at_micros: completed_at.map_or(0, |c| c.timestamp_micros()),
    }
}

/// The order's saga state, locked for the rest of the transaction.
pub async fn lock_saga(conn: &mut PgConnection, order_id: OrderId) -> sqlx::Result<Option<Saga>> {
    let row = sqlx::query!(
        "SELECT status, cancellation_reason, stock_state, payment_state, shipment_state \
         FROM orders WHERE order_id = $1 FOR UPDATE",
        order_id.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|row| {
        Some(Saga {
            status: OrderStatus::parse(&row.status)?,
            reason: match row.cancellation_reason {
                Some(r) => Some(CancelReason::parse(&r)?),
                None => None,
            },
            stock: StockState::parse(&row.stock_state)?,
            payment: PaymentState::parse(&row.payment_state)?,
            shipment: ShipmentState::parse(&row.shipment_state)?,
        })
    }))
}

/// Stores the saga's state; returns the seconds from the order's creation
/// to its completion once it is terminal.
pub async fn save_saga(
    conn: &mut PgConnection,
    order_id: OrderId,
    saga: &Saga,
) -> sqlx::Result<Option<f64>> {
    // NULL until the order is completed, hence `?`.
    sqlx::query_scalar!(
        "UPDATE orders SET status = $2, cancellation_reason = $3, stock_state = $4, payment_state = $5, \
         shipment_state = $6, updated_at = now(), \
         completed_at = CASE WHEN $7 THEN COALESCE(completed_at, now()) END \
         WHERE order_id = $1 \
         RETURNING EXTRACT(EPOCH FROM completed_at - created_at)::float8 AS \"completed_after?\"",
        order_id.as_uuid(),
        saga.status.as_str(),
        saga.reason.map(CancelReason::as_str),
        saga.stock.as_str(),
        saga.payment.as_str(),
        saga.shipment.as_str(),
        saga.status.is_terminal(),
    )
    .fetch_one(conn)
    .await
}

/// Pending orders past their deadline, locked; others' locks are skipped so
/// replicas sweep disjoint sets.
pub async fn lock_overdue(
    conn: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Vec<(OrderId, TraceContext)>> {
    let rows = sqlx::query!(
        "SELECT order_id, trace_context FROM orders WHERE status = 'PENDING' AND deadline_at <= now() \
         ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                OrderId::from(row.order_id),
                TraceContext::from_json(row.trace_context.as_ref()),
            )
        })
        .collect())
}
