//! Processes die and come back while orders are in flight; every order still
//! reaches a terminal state and the saga's invariants hold.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use shipshape_e2e::Shop;
use shipshape_testkit::{Service, StackOptions};

/// The services' event topics.
const TOPICS: [&str; 4] = [
    "order.events",
    "inventory.events",
    "payment.events",
    "shipping.events",
];

/// [`end_offsets`], asked again while the broker cannot answer yet: just
/// after a start its partitions may have no leader for a moment.
async fn end_offsets_once_led(brokers: &str, topics: &[String]) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (brokers, asked) = (brokers.to_owned(), topics.to_vec());
        match tokio::task::spawn_blocking(move || end_offsets(&brokers, &asked)).await? {
            Ok(total) => return Ok(total),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("end offsets not readable yet: {e:#}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How many messages the broker holds on `topics` (their names on the
/// broker): the sum of every partition's end offset.
fn end_offsets(brokers: &str, topics: &[String]) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.metrics.push", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let mut total = 0;
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            total += consumer.fetch_watermarks(topic, partition.id(), timeout)?.1;
        }
    }
    Ok(total)
}

#[tokio::test]
async fn payment_killed_mid_flight_every_order_still_completes_charged_once() -> anyhow::Result<()>
{
    // A deadline far beyond the restart, so every order should confirm.
    let options = StackOptions::for_tests()?.with_env(Service::Order, "SAGA_DEADLINE_MS", "120000");
    let mut shop = Shop::start_with(options).await?;
    // Slow captures keep calls in flight when the process dies.
    shop.psp_faults(300, 0.0).await?;
    let skus = ["SKU-0010", "SKU-0011", "SKU-0012", "SKU-0013"];
    let mut orders = Vec::new();
    for i in 0..20 {
        orders.push(
            shop.place(&[(skus[i % skus.len()], 1)], "tok_visa", "NL")
                .await?,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    shop.stack.kill(Service::Payment)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    shop.stack.start_service(Service::Payment).await?;

    for id in &orders {
        let order = shop.wait_terminal(id, Duration::from_secs(90)).await?;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
    }
    shop.wait_quiet(Duration::from_secs(60)).await?;
    assert_eq!(shop.violations().await?, Vec::<String>::new());
    assert_eq!(
        shop.ledger().await?.approved_captures.len(),
        orders.len(),
        "one capture per order"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_a_service_cleanly_and_it_resumes_where_it_left_off() -> anyhow::Result<()> {
    let mut shop = Shop::start().await?;
    let first = shop.place(&[("SKU-0014", 1)], "tok_visa", "DE").await?;
    shop.wait_terminal(&first, Duration::from_secs(30)).await?;

    let exit = shop.stack.terminate(Service::Order).await?;
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    shop.stack.start_service(Service::Order).await?;

    let second = shop.place(&[("SKU-0014", 1)], "tok_visa", "DE").await?;
    let order = shop.wait_terminal(&second, Duration::from_secs(30)).await?;
    assert_eq!(order["status"], "CONFIRMED");
    shop.wait_quiet(Duration::from_secs(30)).await?;
    assert_eq!(shop.available("SKU-0014").await?, 498);
    assert_eq!(shop.violations().await?, Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn the_broker_killed_mid_flight_comes_back_on_its_data_and_every_order_completes()
-> anyhow::Result<()> {
    // A broker of its own: this test kills it.
    let options = StackOptions::for_tests()?.with_own_broker().with_env(
        Service::Order,
        "SAGA_DEADLINE_MS",
        "120000",
    );
    let mut shop = Shop::start_with(options).await?;
    shop.psp_faults(200, 0.0).await?;
    let mut orders = Vec::new();
    for i in 0..12 {
        let sku = ["SKU-0015", "SKU-0016"][i % 2];
        orders.push(shop.place(&[(sku, 1)], "tok_visa", "FR").await?);
    }
    let brokers = shop.stack.broker_address();
    let topics: Vec<String> = TOPICS.iter().map(|t| shop.stack.topic(t)).collect();
    let acknowledged = end_offsets_once_led(&brokers, &topics).await?;
    assert!(acknowledged > 0, "events were published before the kill");
    shop.stack.kill_broker()?;
    assert!(
        tokio::net::TcpStream::connect(&brokers).await.is_err(),
        "the killed broker still accepts connections"
    );
    // Orders placed while the broker is down wait in the order outbox.
    for _ in 0..4 {
        orders.push(shop.place(&[("SKU-0015", 1)], "tok_visa", "FR").await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(shop.db(Service::Order))
        .await?;
    assert!(
        waiting >= 4,
        "the orders placed during the outage wait in the outbox ({waiting} rows)"
    );
    shop.stack.start_broker().await?;
    // Every message acknowledged before the kill is still there.
    let after_restart = end_offsets_once_led(&brokers, &topics).await?;
    assert!(
        after_restart >= acknowledged,
        "{acknowledged} messages acknowledged before the kill, {after_restart} after the restart"
    );

    for id in &orders {
        let order = shop.wait_terminal(id, Duration::from_secs(90)).await?;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
    }
    shop.wait_quiet(Duration::from_secs(60)).await?;
    assert_eq!(shop.violations().await?, Vec::<String>::new());
    assert_eq!(
        shop.available("SKU-0015").await? + shop.available("SKU-0016").await?,
        1000 - 16
    );
    Ok(())
}

#[tokio::test]
async fn the_psp_simulator_killed_and_restarted_remembers_every_charge() -> anyhow::Result<()> {
    let mut shop = Shop::start().await?;
    let first = shop.place(&[("SKU-0017", 1)], "tok_visa", "ES").await?;
    shop.wait_terminal(&first, Duration::from_secs(30)).await?;
    let before = shop.ledger().await?.approved_captures.len();
    assert_eq!(before, 1);

    shop.stack.kill(Service::Psp)?;
    shop.stack.start_service(Service::Psp).await?;

    assert_eq!(
        shop.ledger().await?.approved_captures.len(),
        before,
        "the capture survived"
    );
    let second = shop.place(&[("SKU-0017", 1)], "tok_visa", "ES").await?;
    let order = shop.wait_terminal(&second, Duration::from_secs(30)).await?;
    assert_eq!(order["status"], "CONFIRMED");
    shop.wait_quiet(Duration::from_secs(30)).await?;
    assert_eq!(shop.violations().await?, Vec::<String>::new());
    Ok(())
}
