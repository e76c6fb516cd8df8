//! The payment service started inside the test, on a database of its own
//! and the real broker, with the PSP simulator (the one stand-in: it plays
//! a third party) on a free port: once an order is placed and its stock
//! reserved, the payment is captured through the PSP and PaymentCaptured
//! reaches the payment topic.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use shipshape_messaging::testing::{RunningService, TestBus, order_placed, service_config};
use shipshape_payment::{Config, Spec};
use shipshape_proto::{Event, PAYMENT_EVENTS, common, events};
use shipshape_psp_simulator::Psp;
use shipshape_resilience::ResilienceConfig;
use shipshape_runtime::CancellationToken;
use shipshape_testkit::{BackingServices, Service};
use shipshape_types::OrderId;
use tokio::net::TcpListener;

/// Long enough for a cold consumer group to form on a busy machine.
const EVENT_WAIT: Duration = Duration::from_secs(60);

/// Serves the PSP simulator's API on a free port until `shutdown`; returns
/// where.
async fn serve_psp(shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let psp = Psp::new(Duration::from_secs(2), shutdown.clone());
    let server = axum::serve(listener, shipshape_psp_simulator::router(psp))
        .with_graceful_shutdown(shutdown.cancelled_owned());
    tokio::spawn(server.into_future());
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_order_is_captured_through_the_psp() -> anyhow::Result<()> {
    BackingServices::run(&[Service::Payment], capture_an_order).await
}

async fn capture_an_order(backing: &BackingServices) -> anyhow::Result<()> {
    let psp_stopped = CancellationToken::new();
    let _stop_psp = psp_stopped.clone().drop_guard();
    let psp = serve_psp(psp_stopped).await?;
    let config = service_config::<Spec>(backing)?;
    let bus = TestBus::connect(&config.kafka, &[PAYMENT_EVENTS]).await?;
    let own = Config {
        psp_url: format!("http://{psp}"),
        psp: ResilienceConfig::default(),
        retry_interval: Duration::from_millis(500),
    };
    let payment = RunningService::start::<Spec>(config, own).await?;

    let order_id = OrderId::generate();
    let unit_price = common::Money {
        amount_minor: 2490,
        currency: "EUR".to_owned(),
    };
    let placed = order_placed("SKU-0001", 2, unit_price, "DE");
    let total = placed.total.clone();
    bus.publish("order", order_id, &Event::OrderPlaced(placed))
        .await?;
    let reserved = Event::StockReserved(events::StockReserved {});
    bus.publish("inventory", order_id, &reserved).await?;

    match bus.next_event(order_id, EVENT_WAIT).await? {
        Event::PaymentCaptured(captured) => {
            anyhow::ensure!(
                captured.amount == total && !captured.psp_reference.is_empty(),
                "the order's total is captured, under the PSP's reference: {captured:?}"
            );
        }
        other => anyhow::bail!("the payment's first event is PaymentCaptured, not {other:?}"),
    }
    payment.stop().await
}
