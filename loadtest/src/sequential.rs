//! One order at a time: the latency of the saga itself, without queueing.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::{Gateway, Secret};
use crate::scenario::{Path, order_body};
use crate::stats::{Latency, ms};

#[derive(Debug)]
pub struct Options {
    pub gateway: String,
    /// The customer's bearer token the orders are placed with.
    pub token: Option<Secret>,
    pub orders: usize,
    /// How often an order is polled while not terminal.
    pub poll_interval: Duration,
    /// Give up on an order after this long.
    pub order_timeout: Duration,
}

#[derive(Default)]
pub struct Report {
    /// From sending the POST to seeing the order terminal.
    pub client: Latency,
    /// `completed_at - created_at`, as the order service recorded them.
    pub server: Latency,
    pub confirmed: usize,
    pub cancelled: usize,
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = format!(
            "orders: {} ({} confirmed, {} cancelled)\n{:<34} {:>8} {:>8} {:>8}\n",
            self.client.count(),
            self.confirmed,
            self.cancelled,
            "POST -> terminal (ms)",
            "p50",
            "p99",
            "max"
        );
        for (name, latency) in [
            ("client (polled)", &self.client),
            ("server (created -> completed)", &self.server),
        ] {
            let summary = latency.summary();
            out.push_str(&format!(
                "{name:<34} {:>8} {:>8} {:>8}\n",
                ms(summary.p50_ms),
                ms(summary.p99_ms),
                ms(summary.max_ms)
            ));
        }
        out
    }
}

pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let gateway = Gateway::new(&options.gateway, Duration::from_secs(10))?
        .with_customer(options.token.clone());
    let run_id = format!("seq{:08x}", fastrand::u32(..));
    let mut report = Report::default();
    for index in 0..options.orders {
        // Cycle through the plentiful part of the catalog.
        let sku = format!("SKU-{:04}", index % 18 + 1);
        let sent = Instant::now();
        let order_id = gateway
            .place_order(
                &order_body(Path::Valid, &sku, 1),
                &format!("{run_id}-{index}"),
            )
            .await?;
        let order = loop {
            let order = gateway.order(&order_id).await?;
            if order.is_terminal() {
                break order;
            }
            if sent.elapsed() > options.order_timeout {
                bail!(
                    "order {order_id} not terminal after {:?}: {}",
                    options.order_timeout,
                    order.status
                );
            }
            tokio::time::sleep(options.poll_interval).await;
        };
        report.client.record(sent.elapsed());
        if let Some(saga) = order.saga_latency() {
            report.server.record(saga);
        }
        match order.status.as_str() {
            "CONFIRMED" => report.confirmed += 1,
            _ => report.cancelled += 1,
        }
    }
    Ok(report)
}
