//! The order timeline (a read model in the order service, made from the
//! events) through the public API: each saga path shows its steps, with the
//! service that did each and the compensations; it is the customer's own;
//! and after it is emptied, an operator's rebuild from the topics gives back
//! the same timelines.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use shipshape_e2e::Shop;
use shipshape_testkit::Service;

const SAGA: Duration = Duration::from_secs(30);

/// The steps of a timeline as `(event, service, detail, compensation)`.
fn steps(timeline: &Value) -> Vec<(String, String, String, bool)> {
    timeline["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|step| {
                    (
                        step["event"].as_str().unwrap_or_default().to_owned(),
                        step["service"].as_str().unwrap_or_default().to_owned(),
                        step["detail"].as_str().unwrap_or_default().to_owned(),
                        step["compensation"].as_bool().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The detail of the step `event` in `steps`; empty if there is none.
fn detail_of(steps: &[(String, String, String, bool)], event: &str) -> String {
    steps
        .iter()
        .find(|(name, ..)| name == event)
        .map(|(_, _, detail, _)| detail.clone())
        .unwrap_or_default()
}

/// A timeline without the sequence numbers, which a rebuild assigns anew.
fn without_sequences(mut timeline: Value) -> Value {
    if let Some(steps) = timeline["steps"].as_array_mut() {
        for step in steps {
            if let Some(step) = step.as_object_mut() {
                step.remove("sequence");
            }
        }
    }
    timeline
}

fn step<'a>(event: &'a str, service: &'a str, detail: &'a str) -> (&'a str, &'a str, &'a str) {
    (event, service, detail)
}

/// `steps` without the compensation flag, for comparing with literals;
/// the flags are checked apart.
fn named(steps: &[(String, String, String, bool)]) -> Vec<(&str, &str, &str)> {
    steps
        .iter()
        .map(|(event, service, detail, _)| (event.as_str(), service.as_str(), detail.as_str()))
        .collect()
}

/// The shop customer's timeline of order `id`, which must be there.
async fn timeline(shop: &Shop, id: &str) -> anyhow::Result<Value> {
    let path = format!("/api/v1/orders/{id}/timeline");
    let (status, body) = shop.get(&path).await?;
    anyhow::ensure!(status == StatusCode::OK, "{path}: {status} {body}");
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_saga_path_shows_its_steps_and_a_rebuild_from_the_topics_gives_them_back()
-> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let paid = shop.place(&[("SKU-0001", 2)], "tok_visa", "DE").await?;
    let declined = shop.place(&[("SKU-0002", 1)], "tok_decline", "DE").await?;
    let unserved = shop.place(&[("SKU-0003", 1)], "tok_visa", "AQ").await?;
    for id in [&paid, &declined, &unserved] {
        shop.wait_terminal(id, SAGA).await?;
    }
    shop.wait_quiet(SAGA).await?;

    let confirmed = timeline(&shop, &paid).await?;
    assert_eq!(confirmed["status"], "CONFIRMED");
    assert!(confirmed["deadline_at"].is_string());
    let confirmed_steps = steps(&confirmed);
    let capture = &detail_of(&confirmed_steps, "PaymentCaptured");
    assert!(
        capture.starts_with("49.80 EUR, reference "),
        "the capture says its amount: {capture}"
    );
    let shipped = &detail_of(&confirmed_steps, "ShipmentScheduled");
    assert_eq!(
        named(&confirmed_steps),
        [
            step("OrderPlaced", "order", "2 item(s), 49.80 EUR"),
            step("StockReserved", "inventory", ""),
            step("PaymentCaptured", "payment", capture),
            step("ShipmentScheduled", "shipping", shipped),
            step("OrderConfirmed", "order", ""),
        ]
    );
    assert!(
        confirmed_steps
            .iter()
            .all(|(.., compensation)| !compensation)
    );

    let cancelled = timeline(&shop, &declined).await?;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["cancellation_reason"], "payment_declined");
    let cancelled_steps = steps(&cancelled);
    let declined_reason = detail_of(&cancelled_steps, "PaymentDeclined");
    assert!(!declined_reason.is_empty(), "a decline says why");
    // Inventory releases on the decline itself, so the release and the
    // order's cancellation come in whichever order they happen.
    let mut cancelled_named = named(&cancelled_steps);
    cancelled_named[3..].sort();
    assert_eq!(
        cancelled_named,
        [
            step("OrderPlaced", "order", "1 item(s), 12.90 EUR"),
            step("StockReserved", "inventory", ""),
            step("PaymentDeclined", "payment", &declined_reason),
            step("OrderCancelled", "order", "payment_declined"),
            step("StockReleased", "inventory", ""),
        ]
    );
    let compensations: Vec<&str> = cancelled_steps
        .iter()
        .filter(|(.., compensation)| *compensation)
        .map(|(event, ..)| event.as_str())
        .collect();
    assert_eq!(compensations, ["StockReleased"]);

    // A failed shipment is compensated twice, by services reacting to the
    // failure itself: the refund, the release and the order's cancellation
    // come in whichever order they happen.
    let refunded = timeline(&shop, &unserved).await?;
    assert_eq!(refunded["cancellation_reason"], "shipping_failed");
    let mut refunded_events: Vec<(String, bool)> = steps(&refunded)
        .into_iter()
        .map(|(event, _, _, compensation)| (event, compensation))
        .collect();
    refunded_events[4..].sort();
    let expected = [
        ("OrderPlaced", false),
        ("StockReserved", false),
        ("PaymentCaptured", false),
        ("ShipmentFailed", false),
        ("OrderCancelled", false),
        ("PaymentRefunded", true),
        ("StockReleased", true),
    ];
    assert_eq!(
        refunded_events,
        expected.map(|(event, compensation)| (event.to_owned(), compensation))
    );

    // Another customer's order is as missing as an unknown one.
    let stranger = shop.stack.token("e2e-stranger", &[])?;
    let http = reqwest::Client::new();
    let answer = http
        .get(shop.url(&format!("/api/v1/orders/{paid}/timeline")))
        .bearer_auth(&stranger)
        .send()
        .await?;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);

    // Only operators rebuild.
    let refused = http
        .post(shop.url("/api/v1/admin/order-timelines/rebuild"))
        .bearer_auth(&stranger)
        .send()
        .await?;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // The read model is lost; the events are not.
    let before: Vec<Value> = vec![
        without_sequences(confirmed),
        without_sequences(cancelled),
        without_sequences(refunded),
    ];
    sqlx::query("DELETE FROM order_timeline")
        .execute(shop.db(Service::Order))
        .await?;
    assert!(steps(&timeline(&shop, &paid).await?).is_empty());

    let operator = shop.stack.token("e2e-operator", &["admin"])?;
    let rebuilt = http
        .post(shop.url("/api/v1/admin/order-timelines/rebuild"))
        .bearer_auth(&operator)
        .timeout(Duration::from_secs(120))
        .send()
        .await?;
    assert_eq!(rebuilt.status(), StatusCode::OK);
    let rebuilt: Value = rebuilt.json().await?;
    // 5 + 5 + 7 steps, from as many events.
    assert_eq!(rebuilt["steps_written"], 17, "{rebuilt}");
    // A relay retry may have published an event twice; it is one step.
    assert!(rebuilt["events_read"].as_i64() >= Some(17), "{rebuilt}");

    let mut after = Vec::new();
    for id in [&paid, &declined, &unserved] {
        after.push(without_sequences(timeline(&shop, id).await?));
    }
    assert_eq!(after, before, "the rebuilt timelines are the live ones");
    Ok(())
}

/// One Server-Sent Event: its `id` (if any) and its `data` as JSON.
struct Pushed {
    id: Option<i64>,
    data: Value,
}

/// Reads `timeline` events from an open stream until one shows the order
/// terminal (CONFIRMED or CANCELLED) or `limit` passes.
async fn read_until_terminal(
    mut response: reqwest::Response,
    limit: Duration,
) -> anyhow::Result<Vec<Pushed>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buffer = String::new();
    let mut pushed = Vec::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (None, None, String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    event = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().parse::<i64>()?);
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            if event.as_deref() != Some("timeline") {
                continue;
            }
            let data: Value = serde_json::from_str(&data)?;
            let terminal = matches!(data["status"].as_str(), Some("CONFIRMED" | "CANCELLED"));
            pushed.push(Pushed { id, data });
            if terminal {
                return Ok(pushed);
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .map_err(|_| anyhow::anyhow!("no terminal event within {limit:?}"))??
            .ok_or_else(|| anyhow::anyhow!("the stream ended before the order was terminal"))?;
        buffer.push_str(std::str::from_utf8(&chunk)?);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_pushes_each_step_as_it_happens_and_resumes_after_the_last_event()
-> anyhow::Result<()> {
    let shop = Shop::start().await?;
    // A slow payment: the stream is open while the saga is under way.
    shop.psp_faults(700, 0.0).await?;
    let id = shop.place(&[("SKU-0005", 1)], "tok_visa", "DE").await?;
    let http = reqwest::Client::new();
    let customer = shop.stack.token(shipshape_e2e::SHOPPER, &[])?;
    let path = format!("/api/v1/orders/{id}/timeline/stream");
    let opened = http
        .get(shop.url(&path))
        .bearer_auth(&customer)
        .send()
        .await?;
    assert_eq!(opened.status(), StatusCode::OK);
    assert_eq!(
        opened.headers()["content-type"].to_str()?,
        "text/event-stream"
    );
    let pushed = read_until_terminal(opened, SAGA).await?;
    assert!(
        pushed.len() >= 2,
        "the steps came as they happened, not at once: {} event(s)",
        pushed.len()
    );
    let streamed: Vec<Value> = pushed
        .iter()
        .flat_map(|event| event.data["steps"].as_array().cloned().unwrap_or_default())
        .collect();
    shop.wait_quiet(SAGA).await?;
    let fetched = timeline(&shop, &id).await?;
    assert_eq!(
        Some(&streamed),
        fetched["steps"].as_array(),
        "the stream sent every step once, in order"
    );
    let last = pushed
        .iter()
        .filter_map(|event| event.id)
        .max()
        .ok_or_else(|| anyhow::anyhow!("no event had an id"))?;

    // Reconnecting with the last id gets the status and nothing it had.
    let resumed = http
        .get(shop.url(&path))
        .bearer_auth(&customer)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await?;
    assert_eq!(resumed.status(), StatusCode::OK);
    let again = read_until_terminal(resumed, SAGA).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].data["status"], "CONFIRMED");
    assert_eq!(again[0].data["steps"], serde_json::json!([]));

    let stranger = shop.stack.token("e2e-stranger", &[])?;
    let refused = http
        .get(shop.url(&path))
        .bearer_auth(&stranger)
        .send()
        .await?;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let bad = http
        .get(shop.url(&path))
        .bearer_auth(&customer)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    Ok(())
}
