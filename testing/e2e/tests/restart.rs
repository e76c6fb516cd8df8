//! Processes die and come back while orders are in flight; every order still
//! reaches a terminal state and the saga's invariants hold.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use shipshape_e2e::Shop;
use shipshape_kafka::Connection;
use shipshape_testkit::{Service, StackOptions};
use uuid::Uuid;

/// The services' event topics.
const TOPICS: [&str; 4] = [
    "order.events",
    "inventory.events",
    "payment.events",
    "shipping.events",
];

/// [`end_offsets`], asked again while the broker cannot answer yet: just
/// after a start its partitions may have no leader for a moment.
async fn end_offsets_once_led(connection: &Connection, topics: &[String]) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (connection, asked) = (connection.clone(), topics.to_vec());
        match tokio::task::spawn_blocking(move || end_offsets(&connection, &asked)).await? {
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
/// broker), asked through `connection`: the sum of every partition's end
/// offset.
fn end_offsets(connection: &Connection, topics: &[String]) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = connection.client_config().create()?;
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

/// Every capture is under way when the payment service dies: the PSP
/// charges the slow card on arrival but answers only after a minute, and a
/// call gives up only after 20 s, so once the PSP's ledger holds every
/// order's charge, the kill comes before any call has ended. That is checked
/// after the kill, on what the restarted service finds: every payment
/// charged, its lease still held, no answer recorded. The restarted service
/// must wait for each lease to expire, take the call over and capture again
/// under the same key (the PSP replays its answer at once); nobody is
/// charged twice.
#[tokio::test]
async fn payment_killed_mid_flight_every_order_still_completes_charged_once() -> anyhow::Result<()>
{
    let options = StackOptions::for_tests()?
        // A deadline far beyond the takeover, so every order should confirm.
        .with_env(Service::Order, "SAGA_DEADLINE_MS", "120000")
        .with_env(Service::Psp, "PSP_SLOW_CARD_DELAY_MS", "60000")
        // One attempt of at most 20 s: a lease of 22 s (the longest call
        // plus 2 s), which the takeover waits out.
        .with_env(Service::Payment, "PSP_TIMEOUT_MS", "20000")
        .with_env(Service::Payment, "PSP_RETRY_ENABLED", "false");
    let mut shop = Shop::start_with(options).await?;
    let skus = ["SKU-0010", "SKU-0011", "SKU-0012", "SKU-0013"];
    let mut orders = Vec::new();
    for i in 0..20 {
        orders.push(
            shop.place(&[(skus[i % skus.len()], 1)], "tok_slow", "NL")
                .await?,
        );
    }
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let charged = shop.ledger().await?.approved_captures.len();
        if charged == orders.len() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < give_up,
            "the PSP charged {charged} of {} orders",
            orders.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shop.stack.kill(Service::Payment)?;

    // Charged, the answer not recorded, the dead process's lease held: the
    // calls the restarted service has to take over.
    let ledger = shop.ledger().await?;
    let unanswered: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT payment_id, attempts FROM payments \
         WHERE status = 'CAPTURE_PENDING' AND claimed_until > now()",
    )
    .fetch_all(shop.db(Service::Payment))
    .await?;
    let in_flight: Vec<(Uuid, i32)> = unanswered
        .into_iter()
        .filter(|(payment, _)| ledger.for_payment(*payment) == (1, 0))
        .collect();
    assert_eq!(
        in_flight.len(),
        orders.len(),
        "every order's capture was charged and unanswered when payment died"
    );
    shop.stack.start_service(Service::Payment).await?;

    for id in &orders {
        let order = shop.wait_terminal(id, Duration::from_secs(90)).await?;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
    }
    shop.wait_quiet(Duration::from_secs(60)).await?;
    assert_eq!(shop.violations().await?, Vec::<String>::new());
    let ledger = shop.ledger().await?;
    assert_eq!(
        ledger.approved_captures.len(),
        orders.len(),
        "one capture per order"
    );
    // The dead process can record nothing, and another claim can only be
    // taken once its lease expired: a capture recorded under a later claim
    // is the takeover's.
    for (payment, attempts_at_kill) in &in_flight {
        let (status, attempts): (String, i32) =
            sqlx::query_as("SELECT status, attempts FROM payments WHERE payment_id = $1")
                .bind(*payment)
                .fetch_one(shop.db(Service::Payment))
                .await?;
        assert_eq!(status, "CAPTURED", "payment {payment}");
        assert!(
            attempts > *attempts_at_kill,
            "payment {payment} was recorded without a claim after the kill \
             ({attempts} attempts, {attempts_at_kill} at the kill)"
        );
        assert_eq!(
            ledger.for_payment(*payment),
            (1, 0),
            "payment {payment} charged once"
        );
    }
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
    let broker = shop.stack.broker_admin();
    let topics: Vec<String> = TOPICS.iter().map(|t| shop.stack.topic(t)).collect();
    let acknowledged = end_offsets_once_led(&broker, &topics).await?;
    assert!(acknowledged > 0, "events were published before the kill");
    shop.stack.kill_broker()?;
    assert!(
        tokio::net::TcpStream::connect(&broker.brokers)
            .await
            .is_err(),
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
    let after_restart = end_offsets_once_led(&broker, &topics).await?;
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
