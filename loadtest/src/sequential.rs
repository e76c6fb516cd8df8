//! One order at a time: the latency of the saga itself, without queueing.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::stats::{Samples, ms};

pub struct Options {
    pub gateway: String,
    pub orders: usize,
    /// How often an order is polled while not terminal.
    pub poll_interval: Duration,
    /// Give up on an order after this long.
    pub order_timeout: Duration,
}

#[derive(Default)]
pub struct Report {
    /// From sending the POST to seeing the order terminal.
    pub client: Samples,
    /// `completed_at - created_at`, as the order service recorded them.
    pub server: Samples,
    pub confirmed: usize,
    pub cancelled: usize,
}

impl Report {
    pub fn render(&mut self) -> String {
        let mut out = format!(
            "orders: {} ({} confirmed, {} cancelled)\n{:<34} {:>8} {:>8} {:>8}\n",
            self.client.len(),
            self.confirmed,
            self.cancelled,
            "POST -> terminal (ms)",
            "p50",
            "p99",
            "max"
        );
        for (name, samples) in [
            ("client (polled)", &mut self.client),
            ("server (created -> completed)", &mut self.server),
        ] {
            out.push_str(&format!(
                "{name:<34} {:>8} {:>8} {:>8}\n",
                ms(samples.percentile(50.0)),
                ms(samples.percentile(99.0)),
                ms(samples.percentile(100.0))
            ));
        }
        out
    }
}

fn order_body(index: usize) -> Value {
    // Cycle through the plentiful part of the catalog.
    let sku = format!("SKU-{:04}", index % 18 + 1);
    json!({
        "items": [{"sku": sku, "quantity": 1}],
        "payment": {"card_token": "tok_visa"},
        "shipping_address": {"name": "Load Test", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    })
}

fn micros(order: &Value, field: &str) -> Option<i64> {
    let text = order[field].as_str()?;
    Some(
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()?
            .timestamp_micros(),
    )
}

pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut report = Report::default();
    for index in 0..options.orders {
        let sent = Instant::now();
        let response = http
            .post(format!("{}/api/v1/orders", options.gateway))
            .json(&order_body(index))
            .send()
            .await
            .context("POST /api/v1/orders")?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status.as_u16() != 202 {
            bail!("order {index} refused: {status} {body}");
        }
        let id = body["order_id"].as_str().context("no order_id")?.to_owned();
        let order = loop {
            let order: Value = http
                .get(format!("{}/api/v1/orders/{id}", options.gateway))
                .send()
                .await?
                .json()
                .await?;
            if matches!(order["status"].as_str(), Some("CONFIRMED" | "CANCELLED")) {
                break order;
            }
            if sent.elapsed() > options.order_timeout {
                bail!(
                    "order {id} not terminal after {:?}: {order}",
                    options.order_timeout
                );
            }
            tokio::time::sleep(options.poll_interval).await;
        };
        report.client.record(sent.elapsed());
        if let (Some(created), Some(completed)) =
            (micros(&order, "created_at"), micros(&order, "completed_at"))
        {
            report
                .server
                .record(Duration::from_micros((completed - created).max(0) as u64));
        }
        match order["status"].as_str() {
            Some("CONFIRMED") => report.confirmed += 1,
            _ => report.cancelled += 1,
        }
    }
    Ok(report)
}
