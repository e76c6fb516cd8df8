//! The invariant checker's broker checks against the real broker: a
//! consumer group that has not processed everything, and dead letters
//! nobody explained, are violations (the seeded database checks are tested
//! in `invariants/tests/seeded.rs`).

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use shipshape_e2e::Shop;
use shipshape_testkit::Service;

/// Waits until `shop` holds at least `n` dead letters.
async fn dead_letters(shop: &Shop, n: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let letters = shop.dead_letters().await?;
        if letters.len() >= n {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} dead letters, not {n}",
            letters.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn unprocessed_events_and_unexplained_dead_letters_are_violations() -> anyhow::Result<()> {
    let mut shop = Shop::start().await?;
    shop.stack.terminate(Service::Shipping).await?;
    // Not through `Shop::publish_raw`, which explains what it sends: these
    // bytes come from nowhere the checker knows of.
    let producer: FutureProducer = shop.stack.broker_admin().client_config().create()?;
    producer
        .send(
            FutureRecord::to(&shop.stack.topic("order.events"))
                .key("stray")
                .payload(&b"not an envelope"[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    // Inventory and payment dead-letter it; shipping, stopped, lags.
    dead_letters(&shop, 2).await?;
    // The two commit its offset up to 500 ms after dead-lettering it
    // (`auto.commit.interval.ms`), and lag until then.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    let violations = loop {
        let violations = shop.violations().await?;
        let behind = violations
            .iter()
            .filter(|v| v.contains(" behind on "))
            .count();
        if behind <= 1 || tokio::time::Instant::now() > give_up {
            break violations;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let count = |text: &str| violations.iter().filter(|v| v.contains(text)).count();
    assert_eq!(count("dead letter"), 2, "{violations:#?}");
    let lagging = format!(
        "{} behind on {}",
        shop.stack.topic("shipshape-shipping"),
        shop.stack.topic("order.events")
    );
    assert_eq!(count(&lagging), 1, "{violations:#?}");
    assert_eq!(violations.len(), 3, "{violations:#?}");
    // Not quiet for the one reason there is: shipping's lag (not, say, a
    // broker the checker could not read).
    let not_quiet = shop
        .wait_quiet(Duration::from_secs(1))
        .await
        .expect_err("shipping lags");
    let not_quiet = format!("{not_quiet:#}");
    assert!(not_quiet.starts_with("not quiet after"), "{not_quiet}");
    assert!(not_quiet.contains(&lagging), "{not_quiet}");
    assert_eq!(not_quiet.matches(" behind on ").count(), 1, "{not_quiet}");

    // Shipping back: it catches up (and dead-letters it too).
    shop.stack.start_service(Service::Shipping).await?;
    dead_letters(&shop, 3).await?;
    shop.wait_quiet(Duration::from_secs(30)).await?;
    let violations = shop.violations().await?;
    assert_eq!(violations.len(), 3, "{violations:#?}");
    assert!(
        violations.iter().all(|v| v.contains("dead letter")),
        "{violations:#?}"
    );
    Ok(())
}
