//! Keeps the products a run buys in stock, so a long run measures the
//! checkout and not an empty shelf.
//!
//! It uses the gateway's admin API (`PUT /api/v1/admin/products/{sku}/stock`,
//! enabled by the gateway's `ADMIN_TOKEN`): before the run every product is
//! topped up to the target, and while it runs the catalog is read every few
//! seconds and any product under half the target is topped up again. Each
//! restock adds to both the available and the received units, so stock
//! stays conserved. Without an admin token nothing is restocked and the
//! run buys from the seeded stock (500 units of each product).

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{Gateway, Secret};

/// What the stock keeper did during a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StockReport {
    /// `admin_api`, or `none` without an admin token.
    pub method: &'static str,
    /// Units each product is topped up to.
    pub target: i64,
    pub restocks: u64,
    pub units_added: i64,
    /// Checks or restocks that failed during the run (the next check tries
    /// again).
    pub failures: u64,
}

/// Tops products up through the admin API.
#[derive(Clone)]
pub struct StockKeeper {
    gateway: Gateway,
    admin_token: Secret,
    skus: HashSet<String>,
    target: i64,
}

impl StockKeeper {
    pub fn new(gateway: Gateway, admin_token: Secret, skus: &[String], target: i64) -> Self {
        Self {
            gateway,
            admin_token,
            skus: skus.iter().cloned().collect(),
            target,
        }
    }

    /// Tops up every product with fewer than `below` units to the target.
    pub async fn top_up(&self, below: i64, report: &mut StockReport) -> anyhow::Result<()> {
        let products = self.gateway.list_products().await?;
        for product in products {
            if !self.skus.contains(&product.sku) || product.available >= below {
                continue;
            }
            let units = self.target - product.available;
            self.gateway
                .restock(&product.sku, units, &self.admin_token)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "restocking {} through {}/api/v1/admin/products/{{sku}}/stock failed \
                         ({e}); is the gateway's ADMIN_TOKEN the one given here?",
                        product.sku,
                        self.gateway.base_url()
                    )
                })?;
            report.restocks += 1;
            report.units_added += units;
        }
        Ok(())
    }

    /// Checks every `interval` until `stop` changes; answers what it did.
    pub fn spawn(
        self,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
        mut report: StockReport,
    ) -> JoinHandle<StockReport> {
        tokio::spawn(async move {
            let low_water = self.target / 2;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    // The only change is "stop"; a dropped sender means the
                    // same.
                    _ = stop.changed() => break,
                }
                if let Err(e) = self.top_up(low_water, &mut report).await {
                    report.failures += 1;
                    eprintln!("warning: stock check failed: {e:#}");
                }
            }
            report
        })
    }
}
