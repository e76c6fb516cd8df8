//! Postgres access for orders and their saga state.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shipshape_proto::{common, order};
use shipshape_telemetry::TraceContext;
use shipshape_types::{Money, OrderId};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::listing::{Cursor, Page};
use crate::placement::{OrderRequest, PricedLine, ShippingAddress};
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
    let inserted = sqlx::query(
        "INSERT INTO orders (order_id, customer_id, status, stock_state, payment_state, shipment_state, \
         total_minor, currency, shipping_address, idempotency_key, request_fingerprint, deadline_at, \
         trace_context) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now() + make_interval(secs => $12), $13) \
         ON CONFLICT (customer_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
    )
    .bind(new.order_id.as_uuid())
    .bind(&new.request.customer_id)
    .bind(saga.status.as_str())
    .bind(saga.stock.as_str())
    .bind(saga.payment.as_str())
    .bind(saga.shipment.as_str())
    .bind(new.total.amount_minor)
    .bind(new.total.currency.as_str())
    .bind(Json(&new.request.address))
    .bind(new.request.idempotency_key.as_deref())
    .bind(new.fingerprint)
    .bind(new.deadline_secs)
    // The placing request's trace, which the deadline continues.
    .bind(TraceContext::current().to_json())
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
    sqlx::query(
        "INSERT INTO order_lines (order_id, position, sku, quantity, unit_price_minor) \
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::bigint[], $5::bigint[])",
    )
    .bind(new.order_id.as_uuid())
    .bind(&positions)
    .bind(&skus)
    .bind(&quantities)
    .bind(&prices)
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
    let row: Option<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT order_id, request_fingerprint FROM orders WHERE customer_id = $1 AND idempotency_key = $2",
    )
    .bind(customer_id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, fingerprint)| (id.into(), fingerprint.unwrap_or_default())))
}

type OrderRow = (
    Uuid,
    String,
    String,
    Option<String>,
    i64,
    String,
    Json<ShippingAddress>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// The columns an order is shown from, in [`ORDER_COLUMNS`] order.
const ORDER_COLUMNS: &str = "order_id, customer_id, status, cancellation_reason, total_minor, \
     currency, shipping_address, created_at, updated_at, completed_at";

/// An order line: sku, quantity, unit price.
type LineRow = (String, i64, i64);

/// The order as the API shows it.
pub async fn load_order(
    conn: &mut PgConnection,
    order_id: OrderId,
) -> sqlx::Result<Option<order::Order>> {
    let row: Option<OrderRow> = sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"
    ))
    .bind(order_id.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT sku, quantity, unit_price_minor FROM order_lines WHERE order_id = $1 ORDER BY position",
    )
    .bind(row.0)
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
    let mut rows: Vec<OrderRow> = match &page.after {
        None => {
            sqlx::query_as(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE customer_id = $1 \
                 ORDER BY created_at DESC, order_id DESC LIMIT $2"
            ))
            .bind(customer_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        Some(after) => {
            sqlx::query_as(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE customer_id = $1 \
                 AND (created_at, order_id) < ($2, $3) \
                 ORDER BY created_at DESC, order_id DESC LIMIT $4"
            ))
            .bind(customer_id)
            .bind(after.created_at)
            .bind(after.order_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
    };
    let next = if rows.len() > page.size as usize {
        rows.truncate(page.size as usize);
        rows.last().map(|row| Cursor {
            created_at: row.7,
            order_id: row.0,
        })
    } else {
        None
    };
    let ids: Vec<Uuid> = rows.iter().map(|row| row.0).collect();
    let lines: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT order_id, sku, quantity, unit_price_minor FROM order_lines \
         WHERE order_id = ANY($1) ORDER BY order_id, position",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut lines_of: HashMap<Uuid, Vec<LineRow>> = HashMap::new();
    for (order_id, sku, quantity, price) in lines {
        lines_of
            .entry(order_id)
            .or_default()
            .push((sku, quantity, price));
    }
    let orders = rows
        .into_iter()
        .map(|row| {
            let lines = lines_of.remove(&row.0).unwrap_or_default();
            shown(row, lines)
        })
        .collect();
    Ok((orders, next))
}

fn shown(row: OrderRow, lines: Vec<LineRow>) -> order::Order {
    let (id, customer_id, status, reason, total, currency, address, created, updated, completed) =
        row;
    let money = |amount_minor| common::Money {
        amount_minor,
        currency: currency.clone(),
    };
    let status = match OrderStatus::parse(&status) {
        Some(OrderStatus::Pending) => order::OrderStatus::Pending,
        Some(OrderStatus::Confirmed) => order::OrderStatus::Confirmed,
        Some(OrderStatus::Cancelling) => order::OrderStatus::Cancelling,
        Some(OrderStatus::Cancelled) => order::OrderStatus::Cancelled,
        None => order::OrderStatus::Unspecified,
    };
    order::Order {
        order_id: id.to_string(),
        customer_id,
        status: status as i32,
        cancellation_reason: reason.unwrap_or_default(),
        lines: lines
            .into_iter()
            .map(|(sku, quantity, price)| order::OrderLine {
                sku,
                quantity,
                unit_price: Some(money(price)),
            })
            .collect(),
        total: Some(money(total)),
        shipping_address: Some(address.0.into()),
        created_at_micros: created.timestamp_micros(),
        updated_at_micros: updated.timestamp_micros(),
        completed_at_micros: completed.map_or(0, |c| c.timestamp_micros()),
    }
}

/// The order's saga state, locked for the rest of the transaction.
pub async fn lock_saga(conn: &mut PgConnection, order_id: OrderId) -> sqlx::Result<Option<Saga>> {
    let row: Option<(String, Option<String>, String, String, String)> = sqlx::query_as(
        "SELECT status, cancellation_reason, stock_state, payment_state, shipment_state \
         FROM orders WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id.as_uuid())
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(status, reason, stock, payment, shipment)| {
        Some(Saga {
            status: OrderStatus::parse(&status)?,
            reason: match reason {
                Some(r) => Some(CancelReason::parse(&r)?),
                None => None,
            },
            stock: StockState::parse(&stock)?,
            payment: PaymentState::parse(&payment)?,
            shipment: ShipmentState::parse(&shipment)?,
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
    sqlx::query_scalar(
        "UPDATE orders SET status = $2, cancellation_reason = $3, stock_state = $4, payment_state = $5, \
         shipment_state = $6, updated_at = now(), \
         completed_at = CASE WHEN $7 THEN COALESCE(completed_at, now()) END \
         WHERE order_id = $1 \
         RETURNING EXTRACT(EPOCH FROM completed_at - created_at)::float8",
    )
    .bind(order_id.as_uuid())
    .bind(saga.status.as_str())
    .bind(saga.reason.map(CancelReason::as_str))
    .bind(saga.stock.as_str())
    .bind(saga.payment.as_str())
    .bind(saga.shipment.as_str())
    .bind(saga.status.is_terminal())
    .fetch_one(conn)
    .await
}

/// Pending orders past their deadline, locked; others' locks are skipped so
/// replicas sweep disjoint sets.
pub async fn lock_overdue(
    conn: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Vec<(OrderId, TraceContext)>> {
    let rows: Vec<(Uuid, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT order_id, trace_context FROM orders WHERE status = 'PENDING' AND deadline_at <= now() \
         ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, trace)| (OrderId::from(id), TraceContext::from_json(trace.as_ref())))
        .collect())
}
