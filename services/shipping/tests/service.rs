//! The shipping service started inside the test, on a database of its own
//! and the real broker: a paid order bound for a country it serves gets a
//! ShipmentScheduled, one bound elsewhere a ShipmentFailed, on the shipping
//! topic; and its ops server reports it ready.

use std::time::Duration;

use shipshape_messaging::testing::{RunningService, TestBus, order_placed, service_config};
use shipshape_proto::{Event, SHIPPING_EVENTS, common, events};
use shipshape_shipping::domain::Coverage;
use shipshape_shipping::{Config, Spec};
use shipshape_testkit::{BackingServices, Service};
use shipshape_types::OrderId;

/// Long enough for a cold consumer group to form on a busy machine.
const EVENT_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_orders_ship_where_shipping_serves_and_fail_elsewhere() -> anyhow::Result<()> {
    BackingServices::run(&[Service::Shipping], ship_paid_orders).await
}

/// Publishes what the other services say of a paid order bound for
/// `country`: its placement, then its capture.
async fn place_and_pay(bus: &TestBus, country: &str) -> anyhow::Result<OrderId> {
    let order_id = OrderId::generate();
    let unit_price = common::Money {
        amount_minor: 2490,
        currency: "EUR".to_owned(),
    };
    let placed = order_placed("SKU-0001", 1, unit_price, country);
    let total = placed.total.clone();
    bus.publish("order", order_id, &Event::OrderPlaced(placed))
        .await?;
    let captured = events::PaymentCaptured {
        payment_id: uuid::Uuid::now_v7().to_string(),
        amount: total,
        psp_reference: "psp_test".to_owned(),
    };
    bus.publish("payment", order_id, &Event::PaymentCaptured(captured))
        .await?;
    Ok(order_id)
}

async fn ship_paid_orders(backing: &BackingServices) -> anyhow::Result<()> {
    let config = service_config::<Spec>(backing)?;
    let bus = TestBus::connect(&config.kafka, &[SHIPPING_EVENTS]).await?;
    let own = Config {
        coverage: Coverage::parse("DE,FR")?,
    };
    let shipping = RunningService::start::<Spec>(config, own).await?;

    // One order at a time: waiting for one order's event passes over the
    // events of any other.
    let served = place_and_pay(&bus, "DE").await?;
    match bus.next_event(served, EVENT_WAIT).await? {
        Event::ShipmentScheduled(scheduled) => {
            anyhow::ensure!(!scheduled.carrier.is_empty(), "no carrier: {scheduled:?}");
        }
        other => anyhow::bail!("a paid order bound for DE is scheduled, not {other:?}"),
    }
    let unserved = place_and_pay(&bus, "AQ").await?;
    match bus.next_event(unserved, EVENT_WAIT).await? {
        Event::ShipmentFailed(failed) => {
            anyhow::ensure!(
                failed.reason == "unsupported_destination",
                "AQ is not served: {failed:?}"
            );
        }
        other => anyhow::bail!("a paid order bound for AQ fails, not {other:?}"),
    }
    // Its consumer has joined the group and its database and broker answer.
    let readyz = format!("http://{}/readyz", shipping.ops_addr());
    let (status, body) = shipshape_testkit::http::get_json(&readyz).await?;
    anyhow::ensure!(
        status.is_success() && body["status"] == "ready",
        "a serving service is ready: {status} {body}"
    );
    shipping.stop().await
}
