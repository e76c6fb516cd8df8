//! Postgres access for the catalog and reservations.

use std::collections::HashMap;

use shipshape_types::{Currency, Money, OrderId, Quantity, Sku};
use sqlx::{PgConnection, PgPool};

use crate::domain::{ReservationStatus, RestockQuantity};

/// A catalog entry. `query_as!` fills it by column name, so each field is
/// named as its column.
#[derive(Debug, Clone)]
pub struct ProductRow {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub currency: String,
    pub available: i64,
}

pub async fn list_products(pool: &PgPool) -> sqlx::Result<Vec<ProductRow>> {
    sqlx::query_as!(
        ProductRow,
        "SELECT sku, name, description, price_minor, currency, available FROM products ORDER BY sku"
    )
    .fetch_all(pool)
    .await
}

pub async fn get_product(pool: &PgPool, sku: &Sku) -> sqlx::Result<Option<ProductRow>> {
    sqlx::query_as!(
        ProductRow,
        "SELECT sku, name, description, price_minor, currency, available FROM products \
         WHERE sku = $1",
        sku.as_str(),
    )
    .fetch_optional(pool)
    .await
}

/// Adds `units` to the product's stock and returns it as it is afterwards;
/// `None` for an unknown sku. `available` and `stock_received` grow in the
/// same statement, so the conservation invariant (received = available +
/// reserved + sold) holds at every instant, and the row lock the update
/// takes orders it with concurrent reservations.
pub async fn restock(
    pool: &PgPool,
    sku: &Sku,
    units: RestockQuantity,
) -> sqlx::Result<Option<ProductRow>> {
    sqlx::query_as!(
        ProductRow,
        "UPDATE products SET available = available + $2, \
           stock_received = stock_received + $2, updated_at = now() \
         WHERE sku = $1 RETURNING sku, name, description, price_minor, currency, available",
        sku.as_str(),
        units.get(),
    )
    .fetch_optional(pool)
    .await
}

/// Unit prices of the skus that exist; missing skus are simply absent.
pub async fn prices(pool: &PgPool, skus: &[Sku]) -> sqlx::Result<HashMap<Sku, Money>> {
    let names: Vec<&str> = skus.iter().map(Sku::as_str).collect();
    let rows = sqlx::query!(
        "SELECT sku, price_minor, currency FROM products WHERE sku = ANY($1)",
        // sqlx would check a text[] against `&[String]`; the cast binds the
        // borrowed names as they are. The same holds for every `as &[&str]`
        // below.
        &names as &[&str],
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some((
                Sku::parse(&row.sku).ok()?,
                Money::new(row.price_minor, Currency::parse(&row.currency).ok()?),
            ))
        })
        .collect())
}

/// Locks the rows of `skus` (in sku order, the one order every transaction
/// uses, so two reservations cannot deadlock) and returns their stock.
pub async fn lock_stock(conn: &mut PgConnection, skus: &[Sku]) -> sqlx::Result<HashMap<Sku, i64>> {
    let names: Vec<&str> = skus.iter().map(Sku::as_str).collect();
    let rows = sqlx::query!(
        "SELECT sku, available FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
        &names as &[&str],
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((Sku::parse(&row.sku).ok()?, row.available)))
        .collect())
}

/// Takes the units of every line and records the reservation. The caller
/// holds the product locks (see [`lock_stock`]).
pub async fn reserve(
    conn: &mut PgConnection,
    order_id: OrderId,
    lines: &[(Sku, Quantity)],
) -> sqlx::Result<()> {
    let skus: Vec<&str> = lines.iter().map(|(s, _)| s.as_str()).collect();
    let units: Vec<i64> = lines.iter().map(|(_, q)| q.get()).collect();
    sqlx::query!(
        "UPDATE products p SET available = p.available - l.units, updated_at = now() \
         FROM UNNEST($1::text[], $2::bigint[]) AS l(sku, units) WHERE p.sku = l.sku",
        &skus as &[&str],
        &units,
    )
    .execute(&mut *conn)
    .await?;
    insert_reservation(&mut *conn, order_id, ReservationStatus::Reserved, None).await?;
    sqlx::query!(
        "INSERT INTO reservation_lines (order_id, sku, quantity) \
         SELECT $1, sku, units FROM UNNEST($2::text[], $3::bigint[]) AS l(sku, units)",
        order_id.as_uuid(),
        &skus as &[&str],
        &units,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_reservation(
    conn: &mut PgConnection,
    order_id: OrderId,
    status: ReservationStatus,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO reservations (order_id, status, reason) VALUES ($1, $2, $3)",
        order_id.as_uuid(),
        status.as_str(),
        reason,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The reservation's status, locked for the rest of the transaction.
pub async fn lock_reservation(
    conn: &mut PgConnection,
    order_id: OrderId,
) -> sqlx::Result<Option<ReservationStatus>> {
    let status = sqlx::query_scalar!(
        "SELECT status FROM reservations WHERE order_id = $1 FOR UPDATE",
        order_id.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(status.as_deref().and_then(ReservationStatus::parse))
}

pub async fn set_reservation_status(
    conn: &mut PgConnection,
    order_id: OrderId,
    status: ReservationStatus,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1",
        order_id.as_uuid(),
        status.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Puts a reservation's units back on the shelf.
pub async fn return_units(conn: &mut PgConnection, order_id: OrderId) -> sqlx::Result<()> {
    let skus = sqlx::query_scalar!(
        "SELECT sku FROM reservation_lines WHERE order_id = $1",
        order_id.as_uuid(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let skus: Vec<Sku> = skus.iter().filter_map(|s| Sku::parse(s).ok()).collect();
    lock_stock(&mut *conn, &skus).await?;
    sqlx::query!(
        "UPDATE products p SET available = p.available + l.quantity, updated_at = now() \
         FROM reservation_lines l WHERE l.order_id = $1 AND p.sku = l.sku",
        order_id.as_uuid(),
    )
    .execute(conn)
    .await?;
    Ok(())
}
