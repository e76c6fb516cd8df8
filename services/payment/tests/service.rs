//! The payment service started inside the test, on a database of its own
//! and the real broker, with the PSP simulator (the one stand-in: it plays
//! a third party) on a free port: once an order is placed and its stock
//! reserved, the payment is captured through the PSP and PaymentCaptured
//! reaches the payment topic.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use shipshape_messaging::testing::{RunningService, TestBus, order_placed, service_config};
use shipshape_payment::{Config, Spec};
use shipshape_proto::{DEAD_LETTER_TOPIC, Event, ORDER_EVENTS, PAYMENT_EVENTS, common, events};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_commits_in_batches_and_a_bad_event_is_dead_lettered_alone() -> anyhow::Result<()>
{
    BackingServices::run(&[Service::Payment], drain_a_backlog).await
}

/// Forty orders placed while payment is down, with one OrderPlaced that
/// payment cannot take (no total) among them. Started, payment learns the
/// forty in fewer transactions than events, and the bad one, which fails
/// the batch it came in, is dead-lettered on its own without costing the
/// others their effect.
async fn drain_a_backlog(backing: &BackingServices) -> anyhow::Result<()> {
    const ORDERS: usize = 40;
    let psp_stopped = CancellationToken::new();
    let _stop_psp = psp_stopped.clone().drop_guard();
    let psp = serve_psp(psp_stopped).await?;
    let mut config = service_config::<Spec>(backing)?;
    config.kafka.max_attempts = 2;
    config
        .kafka
        .ensure_topics(&[ORDER_EVENTS, DEAD_LETTER_TOPIC])
        .await?;
    let bus = TestBus::connect(&config.kafka, &[DEAD_LETTER_TOPIC]).await?;

    let unit_price = common::Money {
        amount_minor: 990,
        currency: "EUR".to_owned(),
    };
    let orders: Vec<OrderId> = (0..ORDERS).map(|_| OrderId::generate()).collect();
    let bad = OrderId::generate();
    for (index, &order_id) in orders.iter().enumerate() {
        if index == ORDERS / 2 {
            let mut without_total = order_placed("SKU-0001", 1, unit_price.clone(), "DE");
            without_total.total = None;
            bus.publish("order", bad, &Event::OrderPlaced(without_total))
                .await?;
        }
        let placed = order_placed("SKU-0001", 1, unit_price.clone(), "DE");
        bus.publish("order", order_id, &Event::OrderPlaced(placed))
            .await?;
    }

    let database = sqlx::PgPool::connect(backing.database_url("payment")?).await?;
    let own = Config {
        psp_url: format!("http://{psp}"),
        psp: ResilienceConfig::default(),
        retry_interval: Duration::from_millis(500),
    };
    let payment = RunningService::start::<Spec>(config, own).await?;

    let dead = bus.next_event(bad, EVENT_WAIT).await?;
    anyhow::ensure!(
        matches!(&dead, Event::OrderPlaced(placed) if placed.total.is_none()),
        "the OrderPlaced without a total is the dead letter, unchanged: {dead:?}"
    );
    let ids: Vec<_> = orders.iter().map(OrderId::as_uuid).collect();
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    let (rows, transactions) = loop {
        // `xmin`: the transaction that wrote the row's current version.
        let (rows, transactions): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT xmin::text) FROM payments WHERE order_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&database)
        .await?;
        if rows == ORDERS as i64 || tokio::time::Instant::now() > deadline {
            break (rows, transactions);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    anyhow::ensure!(
        rows == ORDERS as i64,
        "every good order has its payment: {rows} of {ORDERS}"
    );
    anyhow::ensure!(
        transactions < rows,
        "a backlog commits several events per transaction: {rows} payments in {transactions}"
    );
    let bad_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE order_id = $1")
        .bind(bad.as_uuid())
        .fetch_one(&database)
        .await?;
    anyhow::ensure!(bad_rows == 0, "the bad event had no effect");
    println!("{rows} payments learned in {transactions} transactions");
    database.close().await;
    payment.stop().await
}
