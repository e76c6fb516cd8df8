//! The checker against real databases: four fresh scratch databases with
//! the services' own migrations, seeded with a consistent state (no
//! violation), then with exactly one violation each, which must be reported
//! with its kind and order. A checker that cannot fail is worthless.
//!
//! No PSP and no broker here: money is judged by the payment table (see the
//! crate's rules), and lag and dead letters are unit-tested as functions and
//! exercised for real by the e2e tests.

use shipshape_invariants::{Checker, Report, Sources, ViolationKind};
use shipshape_testkit::postgres;
use sqlx::PgPool;
use uuid::Uuid;

const SERVICES: [&str; 4] = ["order", "inventory", "payment", "shipping"];

/// Four fresh databases (`shipshape_t<hex>_<service>`, so leftovers of a
/// killed run are dropped like any test stack's), migrated and writable.
struct Scratch {
    admin_url: String,
    names: Vec<String>,
    urls: Vec<String>,
    order: PgPool,
    inventory: PgPool,
    payment: PgPool,
    shipping: PgPool,
}

impl Scratch {
    async fn create() -> anyhow::Result<Self> {
        let admin_url = postgres::ensure_server().await?;
        let prefix = shipshape_testkit::stack::test_database_prefix();
        let mut names = Vec::new();
        let mut urls = Vec::new();
        let mut pools = Vec::new();
        for service in SERVICES {
            let name = format!("{prefix}_{service}");
            let role = format!("shipshape_{service}");
            names.push(name.clone());
            let url = postgres::create_service_database(&admin_url, &name, &role).await?;
            let pool = PgPool::connect(&url).await?;
            // As the services run them: the messaging tables, then their own.
            let migrators = [
                sqlx::migrate!("../../shared/messaging/migrations"),
                match service {
                    "order" => sqlx::migrate!("../../services/order/migrations"),
                    "inventory" => sqlx::migrate!("../../services/inventory/migrations"),
                    "payment" => sqlx::migrate!("../../services/payment/migrations"),
                    _ => sqlx::migrate!("../../services/shipping/migrations"),
                },
            ];
            for mut migrator in migrators {
                migrator.set_ignore_missing(true);
                migrator.run(&pool).await?;
            }
            urls.push(url);
            pools.push(pool);
        }
        let [order, inventory, payment, shipping]: [PgPool; 4] = pools
            .try_into()
            .map_err(|_| anyhow::anyhow!("four pools"))?;
        Ok(Self {
            admin_url,
            names,
            urls,
            order,
            inventory,
            payment,
            shipping,
        })
    }

    async fn remove(self) -> anyhow::Result<()> {
        for pool in [&self.order, &self.inventory, &self.payment, &self.shipping] {
            pool.close().await;
        }
        postgres::drop_databases(&self.admin_url, &self.names).await
    }

    async fn check(&self) -> anyhow::Result<Report> {
        let checker = Checker::connect(Sources {
            order_db: self.urls[0].clone(),
            inventory_db: self.urls[1].clone(),
            payment_db: self.urls[2].clone(),
            shipping_db: self.urls[3].clone(),
            psp_url: None,
            broker: None,
            topic_prefix: String::new(),
        })
        .await?;
        Ok(checker.check().await?)
    }

    /// Asserts the report holds exactly `expected`: kind and order.
    async fn expect(&self, expected: &[(Option<Uuid>, ViolationKind)]) -> anyhow::Result<()> {
        let report = self.check().await?;
        let found: Vec<_> = report
            .violations
            .iter()
            .map(|v| (v.order_id, v.kind.clone()))
            .collect();
        anyhow::ensure!(found == expected, "expected {expected:?}, got:\n{report}");
        Ok(())
    }

    /// An order of `quantity` × `sku` in `status` (with `reason`).
    async fn order(
        &self,
        status: &str,
        reason: Option<&str>,
        sku: &str,
        quantity: i64,
    ) -> anyhow::Result<Uuid> {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO orders (order_id, customer_id, status, cancellation_reason, stock_state, \
               payment_state, shipment_state, total_minor, currency, shipping_address, deadline_at) \
             VALUES ($1, 'alice', $2, $3, 'UNKNOWN', 'UNKNOWN', 'UNKNOWN', 1000, 'EUR', '{}', now())",
        )
        .bind(id)
        .bind(status)
        .bind(reason)
        .execute(&self.order)
        .await?;
        sqlx::query(
            "INSERT INTO order_lines (order_id, position, sku, quantity, unit_price_minor) \
             VALUES ($1, 0, $2, $3, 1000)",
        )
        .bind(id)
        .bind(sku)
        .bind(quantity)
        .execute(&self.order)
        .await?;
        Ok(id)
    }

    /// A reservation of the order's `quantity` × `sku`; RESERVED and
    /// COMMITTED ones take the units from `available`, as inventory does.
    async fn reservation(
        &self,
        id: Uuid,
        status: &str,
        sku: &str,
        quantity: i64,
    ) -> anyhow::Result<()> {
        let mut tx = self.inventory.begin().await?;
        sqlx::query("INSERT INTO reservations (order_id, status) VALUES ($1, $2)")
            .bind(id)
            .bind(status)
            .execute(&mut *tx)
            .await?;
        if status != "REJECTED" {
            sqlx::query(
                "INSERT INTO reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(sku)
            .bind(quantity)
            .execute(&mut *tx)
            .await?;
        }
        if matches!(status, "RESERVED" | "COMMITTED") {
            sqlx::query("UPDATE products SET available = available - $2 WHERE sku = $1")
                .bind(sku)
                .bind(quantity)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn payment(&self, id: Uuid, status: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO payments (order_id, payment_id, status) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(status)
            .execute(&self.payment)
            .await?;
        Ok(())
    }

    async fn shipment(&self, id: Uuid, status: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO shipments (order_id, shipment_id, status) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(status)
            .execute(&self.shipping)
            .await?;
        Ok(())
    }

    /// A checkout that went right: stock taken, captured, shipped.
    async fn confirmed(&self, sku: &str, quantity: i64) -> anyhow::Result<Uuid> {
        let id = self.order("CONFIRMED", None, sku, quantity).await?;
        self.reservation(id, "COMMITTED", sku, quantity).await?;
        self.payment(id, "CAPTURED").await?;
        self.shipment(id, "SCHEDULED").await?;
        Ok(id)
    }

    /// A checkout cancelled for want of stock: nothing taken anywhere.
    async fn out_of_stock(&self) -> anyhow::Result<Uuid> {
        let id = self
            .order("CANCELLED", Some("out_of_stock"), "SKU-0019", 6)
            .await?;
        self.reservation(id, "REJECTED", "SKU-0019", 6).await?;
        self.payment(id, "VOIDED").await?;
        self.shipment(id, "CANCELLED").await?;
        Ok(id)
    }
}

/// Runs `test` on fresh databases and drops them whatever the outcome.
macro_rules! scratch_test {
    ($name:ident, |$db:ident| $body:block) => {
        #[tokio::test]
        async fn $name() -> anyhow::Result<()> {
            let $db = Scratch::create().await?;
            let outcome: anyhow::Result<()> = async { $body }.await;
            $db.remove().await?;
            outcome
        }
    };
}

scratch_test!(a_consistent_state_has_no_violation, |db| {
    db.confirmed("SKU-0001", 2).await?;
    db.out_of_stock().await?;
    // Released after a declined payment: the units are back.
    let declined = db
        .order("CANCELLED", Some("payment_declined"), "SKU-0003", 1)
        .await?;
    db.reservation(declined, "RELEASED", "SKU-0003", 1).await?;
    db.payment(declined, "DECLINED").await?;
    db.shipment(declined, "CANCELLED").await?;
    // Captured, shipping failed, refunded.
    let refunded = db
        .order("CANCELLED", Some("shipping_failed"), "SKU-0004", 1)
        .await?;
    db.reservation(refunded, "RELEASED", "SKU-0004", 1).await?;
    db.payment(refunded, "REFUNDED").await?;
    db.shipment(refunded, "FAILED").await?;
    db.expect(&[]).await?;
    let report = db.check().await?;
    let counts: Vec<(&str, u64)> = report
        .orders
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    assert_eq!(
        counts,
        [
            ("CANCELLED/out_of_stock", 1),
            ("CANCELLED/payment_declined", 1),
            ("CANCELLED/shipping_failed", 1),
            ("CONFIRMED", 1)
        ]
    );
    assert_eq!(report.skipped.len(), 2, "{report}");
    Ok(())
});

scratch_test!(an_order_left_pending_is_not_terminal, |db| {
    db.confirmed("SKU-0001", 1).await?;
    let pending = db.order("PENDING", None, "SKU-0002", 1).await?;
    // Its stock is held, which is right for an unfinished order.
    db.reservation(pending, "RESERVED", "SKU-0002", 1).await?;
    db.expect(&[(Some(pending), ViolationKind::NotTerminal)])
        .await
});

scratch_test!(stock_changed_without_a_reservation_is_not_conserved, |db| {
    db.confirmed("SKU-0001", 1).await?;
    sqlx::query("UPDATE products SET available = available - 1 WHERE sku = 'SKU-0005'")
        .execute(&db.inventory)
        .await?;
    db.expect(&[(
        None,
        ViolationKind::StockNotConserved {
            sku: "SKU-0005".into(),
        },
    )])
    .await
});

scratch_test!(
    a_cancelled_order_whose_stock_is_still_reserved_holds_stock,
    |db| {
        db.confirmed("SKU-0001", 1).await?;
        let id = db
            .order("CANCELLED", Some("payment_declined"), "SKU-0006", 2)
            .await?;
        db.reservation(id, "RESERVED", "SKU-0006", 2).await?;
        db.payment(id, "DECLINED").await?;
        db.shipment(id, "CANCELLED").await?;
        db.expect(&[(Some(id), ViolationKind::CancelledHoldsStock)])
            .await
    }
);

scratch_test!(a_cancelled_order_still_captured_is_not_refunded, |db| {
    db.confirmed("SKU-0001", 1).await?;
    let id = db
        .order("CANCELLED", Some("shipping_failed"), "SKU-0007", 1)
        .await?;
    db.reservation(id, "RELEASED", "SKU-0007", 1).await?;
    db.payment(id, "CAPTURED").await?;
    db.shipment(id, "FAILED").await?;
    db.expect(&[(Some(id), ViolationKind::CancelledNotRefunded)])
        .await
});

scratch_test!(a_confirmed_order_without_a_shipment_is_incomplete, |db| {
    db.out_of_stock().await?;
    let id = db.confirmed("SKU-0008", 3).await?;
    sqlx::query("DELETE FROM shipments WHERE order_id = $1")
        .bind(id)
        .execute(&db.shipping)
        .await?;
    db.expect(&[(Some(id), ViolationKind::ConfirmedIncomplete)])
        .await
});

scratch_test!(
    a_confirmed_order_whose_stock_was_not_taken_is_incomplete,
    |db| {
        let id = db.order("CONFIRMED", None, "SKU-0009", 1).await?;
        // Reserved and never committed: still conserved, but never sold.
        db.reservation(id, "RESERVED", "SKU-0009", 1).await?;
        db.payment(id, "CAPTURED").await?;
        db.shipment(id, "SCHEDULED").await?;
        db.expect(&[(Some(id), ViolationKind::ConfirmedIncomplete)])
            .await
    }
);

scratch_test!(
    an_event_left_in_an_outbox_is_reported_with_its_order,
    |db| {
        let id = db.confirmed("SKU-0001", 1).await?;
        sqlx::query(
        "INSERT INTO outbox (topic, message_key, payload) VALUES ('payment.events', $1, '\\x00')",
    )
    .bind(id.to_string())
    .execute(&db.payment)
    .await?;
        db.expect(&[(
            Some(id),
            ViolationKind::OutboxNotEmpty {
                service: "payment".into(),
            },
        )])
        .await
    }
);
