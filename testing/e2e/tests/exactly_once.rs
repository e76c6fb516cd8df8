//! Exactly-once effects over at-least-once delivery: every event of a
//! finished checkout is delivered a second time, and nothing happens twice.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use shipshape_e2e::Shop;
use shipshape_testkit::Service;

const TOPICS: [&str; 4] = [
    "order.events",
    "inventory.events",
    "payment.events",
    "shipping.events",
];

#[tokio::test]
async fn every_event_delivered_twice_has_its_effect_once() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let confirmed = shop.place(&[("SKU-0008", 3)], "tok_visa", "DE").await?;
    let refunded = shop.place(&[("SKU-0009", 2)], "tok_visa", "AQ").await?;
    for id in [&confirmed, &refunded] {
        shop.wait_terminal(id, Duration::from_secs(30)).await?;
    }
    shop.wait_quiet(Duration::from_secs(30)).await?;

    let messages = shop.published(&TOPICS).await?;
    assert!(
        messages.len() >= 12,
        "a checkout publishes at least a dozen events, got {}",
        messages.len()
    );
    let producer: FutureProducer = shop.stack.broker_admin().client_config().create()?;
    for (topic, key, payload) in &messages {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    shop.wait_quiet(Duration::from_secs(30)).await?;

    assert_eq!(shop.available("SKU-0008").await?, 497, "stock taken once");
    assert_eq!(
        shop.available("SKU-0009").await?,
        500,
        "stock returned once"
    );
    let confirmed_effects = shop.effects(&confirmed).await?;
    assert_eq!(
        (confirmed_effects.captures, confirmed_effects.refunds),
        (1, 0)
    );
    let refunded_effects = shop.effects(&refunded).await?;
    assert_eq!(
        (refunded_effects.captures, refunded_effects.refunds),
        (1, 1)
    );
    let shipments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM shipments WHERE status = 'SCHEDULED'")
            .fetch_one(shop.db(Service::Shipping))
            .await?;
    assert_eq!(shipments, 1);
    let dead_letters = shop.published(&["dead-letters"]).await?;
    assert!(
        dead_letters.is_empty(),
        "no handler may fail on a redelivery: {} dead letters",
        dead_letters.len()
    );
    assert_eq!(shop.violations().await?, Vec::<String>::new());
    Ok(())
}
