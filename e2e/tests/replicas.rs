//! Two replicas of every saga service under a steady checkout load: one
//! replica of each is SIGKILLed mid-load and a new one is added later
//! (scale out). The survivors take over the killed replicas' partitions,
//! the gateway and the order service stop calling the dead gRPC replicas,
//! and every order still ends as it should, with the invariants intact.
//! Run once with each consumer-group protocol, and how long each takes to
//! hand the orphaned partitions over is printed.

use std::collections::BTreeMap;
use std::time::Duration;

use shipshape_e2e::Shop;
use shipshape_testkit::{Replica, Service, StackOptions};
use tokio::time::Instant;

/// The consumer services, and how many partitions each reads: three topics
/// of three partitions, shipping two.
const CONSUMERS: [(Service, f64); 4] = [
    (Service::Order, 9.0),
    (Service::Inventory, 9.0),
    (Service::Payment, 9.0),
    (Service::Shipping, 6.0),
];

/// A checkout every this often.
const ARRIVAL: Duration = Duration::from_millis(250);

/// When, after the load starts, a replica of each service is killed, and
/// when one is added back.
const KILL_AT: Duration = Duration::from_secs(5);
const ADD_AT: Duration = Duration::from_secs(20);
const LOAD_FOR: Duration = Duration::from_secs(30);

/// How long a survivor may take to own every partition of its group. The
/// session timeout is 6 s; the group then has to settle.
const HANDOVER_WITHIN: Duration = Duration::from_secs(30);

/// Partitions the first replica of `service` owns, as it reports them.
async fn assigned(shop: &Shop, service: Service) -> anyhow::Result<f64> {
    Ok(shop
        .metric(service, "shipshape_consumer_assigned_partitions")
        .await?
        .unwrap_or(0.0))
}

async fn kill_and_scale_out_under_load(protocol: &str) -> anyhow::Result<()> {
    let mut options = StackOptions::for_tests()?.with_replicas(2, 3).with_env(
        Service::Order,
        "SAGA_DEADLINE_MS",
        "120000",
    );
    for (service, _) in CONSUMERS {
        options = options.with_env(service, "KAFKA_GROUP_PROTOCOL", protocol);
    }
    let mut shop = Shop::start_with(options).await?;
    for (service, _) in CONSUMERS {
        let owned = assigned(&shop, service).await?;
        let second = shop.stack.pid(Replica::new(service, 1));
        assert!(second.is_some(), "{service} runs a second replica");
        assert!(
            owned > 0.0,
            "the first {service} replica owns some partitions"
        );
    }

    let started = Instant::now();
    let mut orders = Vec::new();
    let mut killed_at = None;
    let mut handed_over: BTreeMap<Service, Duration> = BTreeMap::new();
    let mut added = false;
    while started.elapsed() < LOAD_FOR {
        let due = started + ARRIVAL * u32::try_from(orders.len())?;
        tokio::time::sleep_until(due).await;
        let sku = ["SKU-0001", "SKU-0002", "SKU-0003"][orders.len() % 3];
        orders.push(shop.place(&[(sku, 1)], "tok_visa", "DE").await?);

        if killed_at.is_none() && started.elapsed() >= KILL_AT {
            for (service, _) in CONSUMERS {
                shop.stack.kill(Replica::new(service, 1))?;
            }
            killed_at = Some(Instant::now());
        }
        if let Some(at) = killed_at {
            for (service, partitions) in CONSUMERS {
                if !handed_over.contains_key(&service)
                    && assigned(&shop, service).await? == partitions
                {
                    handed_over.insert(service, at.elapsed());
                }
            }
            let waited = at.elapsed();
            assert!(
                handed_over.len() == CONSUMERS.len() || waited < HANDOVER_WITHIN,
                "after {waited:?} not every survivor owns its group's partitions: {handed_over:?}"
            );
        }
        if !added && started.elapsed() >= ADD_AT {
            for (service, _) in CONSUMERS {
                let replica = shop.stack.add_replica(service).await?;
                assert_eq!(replica, Replica::new(service, 2));
            }
            added = true;
        }
    }
    assert!(added, "the load lasted until the scale-out");
    assert_eq!(
        handed_over.len(),
        CONSUMERS.len(),
        "every survivor took over before the scale-out: {handed_over:?}"
    );
    eprintln!("{protocol} protocol: kill -> survivor owns every partition: {handed_over:?}");

    for id in &orders {
        let order = shop.wait_terminal(id, Duration::from_secs(90)).await?;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
    }
    shop.wait_quiet(Duration::from_secs(60)).await?;
    assert_eq!(shop.violations().await?, Vec::<String>::new());
    let mut left = 0;
    for sku in ["SKU-0001", "SKU-0002", "SKU-0003"] {
        left += shop.available(sku).await?;
    }
    assert_eq!(
        left,
        1500 - orders.len() as i64,
        "stock taken once per order"
    );
    // The new replicas took a share of the work back.
    for (service, _) in CONSUMERS {
        let url = format!("{}/metrics", shop.stack.ops_url(Replica::new(service, 2)));
        let text = reqwest::get(&url).await?.text().await?;
        let owned = shipshape_e2e::metric_value(&text, "shipshape_consumer_assigned_partitions");
        assert!(
            owned.is_some_and(|owned| owned > 0.0),
            "the added {service} replica owns partitions: {owned:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn replicas_killed_and_added_under_load_with_the_classic_protocol() -> anyhow::Result<()> {
    kill_and_scale_out_under_load("classic").await
}

#[tokio::test]
async fn replicas_killed_and_added_under_load_with_the_consumer_protocol() -> anyhow::Result<()> {
    kill_and_scale_out_under_load("consumer").await
}
