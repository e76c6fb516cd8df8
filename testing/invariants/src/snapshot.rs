//! What each service's database holds, read in one read-only transaction
//! per database so each service's part is a consistent snapshot. (The four
//! databases cannot be read atomically together; that is why the checker
//! runs once the system is quiet.)

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{Error, Result};

/// Every service's rows the invariants are about.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub orders: Vec<Order>,
    /// Units ordered per order and sku (an order may list a sku twice).
    pub order_lines: HashMap<Uuid, BTreeMap<String, i64>>,
    pub reservations: HashMap<Uuid, Reservation>,
    pub products: Vec<Product>,
    pub payments: HashMap<Uuid, Payment>,
    /// Shipment status per order.
    pub shipments: HashMap<Uuid, String>,
    /// Events not yet published, per service.
    pub outbox: Vec<OutboxRow>,
}

#[derive(Debug)]
pub(crate) struct Order {
    pub order_id: Uuid,
    pub status: String,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Reservation {
    pub status: String,
    pub lines: BTreeMap<String, i64>,
}

#[derive(Debug)]
pub(crate) struct Product {
    pub sku: String,
    pub stock_received: i64,
    pub available: i64,
}

#[derive(Debug)]
pub(crate) struct Payment {
    pub payment_id: Uuid,
    pub status: String,
}

#[derive(Debug)]
pub(crate) struct OutboxRow {
    pub service: &'static str,
    pub topic: String,
    pub message_key: String,
}

/// One read-only pool per service database.
pub(crate) struct Databases {
    order: PgPool,
    inventory: PgPool,
    payment: PgPool,
    shipping: PgPool,
}

impl Databases {
    pub async fn connect(
        order: &str,
        inventory: &str,
        payment: &str,
        shipping: &str,
    ) -> Result<Self> {
        let (order, inventory, payment, shipping) = tokio::try_join!(
            read_only_pool("order", order),
            read_only_pool("inventory", inventory),
            read_only_pool("payment", payment),
            read_only_pool("shipping", shipping),
        )?;
        Ok(Self {
            order,
            inventory,
            payment,
            shipping,
        })
    }

    pub async fn snapshot(&self) -> Result<Snapshot> {
        let (orders, inventory, payments, shipments) = tokio::try_join!(
            read_orders(&self.order),
            read_inventory(&self.inventory),
            read_payments(&self.payment),
            read_shipments(&self.shipping),
        )?;
        let (orders, order_lines, mut outbox) = orders;
        let (reservations, products, inventory_outbox) = inventory;
        let (payments, payment_outbox) = payments;
        let (shipments, shipping_outbox) = shipments;
        outbox.extend(inventory_outbox);
        outbox.extend(payment_outbox);
        outbox.extend(shipping_outbox);
        Ok(Snapshot {
            orders,
            order_lines,
            reservations,
            products,
            payments,
            shipments,
            outbox,
        })
    }
}

/// A small pool whose sessions are read only from the start
/// (`default_transaction_read_only`), so not even a bug here can write to a
/// service's database.
async fn read_only_pool(service: &str, url: &str) -> Result<PgPool> {
    let context = |what: &str| format!("{what} the {service} database");
    let options: PgConnectOptions = url.parse().map_err(|source| Error::Database {
        context: context("parsing the URL of"),
        source: Box::new(source),
    })?;
    let options = options.options([("default_transaction_read_only", "on")]);
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|source| Error::Database {
            context: context("connecting to"),
            source: Box::new(source),
        })
}

fn failed(service: &str, what: &str) -> impl FnOnce(sqlx::Error) -> Error {
    let context = format!("reading {what} from the {service} database");
    move |source| Error::Database {
        context,
        source: Box::new(source),
    }
}

/// A read-only transaction that sees one snapshot for all its queries.
async fn begin(service: &'static str, pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(failed(service, "(starting a transaction)"))
}

async fn read_outbox(
    service: &'static str,
    tx: &mut Transaction<'static, Postgres>,
) -> Result<Vec<OutboxRow>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT topic, message_key FROM outbox ORDER BY id")
            .fetch_all(&mut **tx)
            .await
            .map_err(failed(service, "the outbox"))?;
    Ok(rows
        .into_iter()
        .map(|(topic, message_key)| OutboxRow {
            service,
            topic,
            message_key,
        })
        .collect())
}

type OrderPart = (
    Vec<Order>,
    HashMap<Uuid, BTreeMap<String, i64>>,
    Vec<OutboxRow>,
);

async fn read_orders(pool: &PgPool) -> Result<OrderPart> {
    let service = "order";
    let mut tx = begin(service, pool).await?;
    let orders: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT order_id, status, cancellation_reason FROM orders ORDER BY created_at, order_id",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(failed(service, "orders"))?;
    let lines: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT order_id, sku, SUM(quantity)::bigint FROM order_lines GROUP BY order_id, sku",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(failed(service, "order lines"))?;
    let outbox = read_outbox(service, &mut tx).await?;
    let orders = orders
        .into_iter()
        .map(|(order_id, status, reason)| Order {
            order_id,
            status,
            reason,
        })
        .collect();
    let mut order_lines: HashMap<Uuid, BTreeMap<String, i64>> = HashMap::new();
    for (order_id, sku, quantity) in lines {
        order_lines
            .entry(order_id)
            .or_default()
            .insert(sku, quantity);
    }
    Ok((orders, order_lines, outbox))
}

type InventoryPart = (HashMap<Uuid, Reservation>, Vec<Product>, Vec<OutboxRow>);

async fn read_inventory(pool: &PgPool) -> Result<InventoryPart> {
    let service = "inventory";
    let mut tx = begin(service, pool).await?;
    let reservations: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT order_id, status FROM reservations")
            .fetch_all(&mut *tx)
            .await
            .map_err(failed(service, "reservations"))?;
    let lines: Vec<(Uuid, String, i64)> =
        sqlx::query_as("SELECT order_id, sku, quantity FROM reservation_lines")
            .fetch_all(&mut *tx)
            .await
            .map_err(failed(service, "reservation lines"))?;
    let products: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT sku, stock_received, available FROM products ORDER BY sku")
            .fetch_all(&mut *tx)
            .await
            .map_err(failed(service, "products"))?;
    let outbox = read_outbox(service, &mut tx).await?;
    let mut reservations: HashMap<Uuid, Reservation> = reservations
        .into_iter()
        .map(|(order_id, status)| {
            let lines = BTreeMap::new();
            (order_id, Reservation { status, lines })
        })
        .collect();
    for (order_id, sku, quantity) in lines {
        // A line references its reservation (foreign key), so it is there.
        if let Some(reservation) = reservations.get_mut(&order_id) {
            reservation.lines.insert(sku, quantity);
        }
    }
    let products = products
        .into_iter()
        .map(|(sku, stock_received, available)| Product {
            sku,
            stock_received,
            available,
        })
        .collect();
    Ok((reservations, products, outbox))
}

async fn read_payments(pool: &PgPool) -> Result<(HashMap<Uuid, Payment>, Vec<OutboxRow>)> {
    let service = "payment";
    let mut tx = begin(service, pool).await?;
    let payments: Vec<(Uuid, Uuid, String)> =
        sqlx::query_as("SELECT order_id, payment_id, status FROM payments")
            .fetch_all(&mut *tx)
            .await
            .map_err(failed(service, "payments"))?;
    let outbox = read_outbox(service, &mut tx).await?;
    let payments = payments
        .into_iter()
        .map(|(order_id, payment_id, status)| (order_id, Payment { payment_id, status }))
        .collect();
    Ok((payments, outbox))
}

async fn read_shipments(pool: &PgPool) -> Result<(HashMap<Uuid, String>, Vec<OutboxRow>)> {
    let service = "shipping";
    let mut tx = begin(service, pool).await?;
    let shipments: Vec<(Uuid, String)> = sqlx::query_as("SELECT order_id, status FROM shipments")
        .fetch_all(&mut *tx)
        .await
        .map_err(failed(service, "shipments"))?;
    let outbox = read_outbox(service, &mut tx).await?;
    Ok((shipments.into_iter().collect(), outbox))
}
