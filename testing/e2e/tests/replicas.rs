//! Two replicas of every saga service under a steady checkout load: one
//! replica of each is SIGKILLed mid-load and a new one is added later
//! (scale out). The survivors take over the killed replicas' partitions,
//! the gateway and the order service stop calling the dead gRPC replicas,
//! and every order still ends as it should, with the invariants intact.
//! Run once with each consumer-group protocol, and how long each takes to
//! hand the orphaned partitions over is printed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use prost::Message as _;
use shipshape_e2e::Shop;
use shipshape_proto::events::Envelope;
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

/// How long a survivor may take to own every partition of its group: the
/// 6 s session timeout, then the group has to settle. Well before the
/// scale-out at [`ADD_AT`].
const HANDOVER_WITHIN: Duration = Duration::from_secs(12);

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

/// Every single-writer job with two processes racing for it: both order
/// replicas relay one outbox and sweep one table of deadlines, both payment
/// replicas claim from one table of payments. Every order outlives its
/// deadline at a slow payment provider, so each is swept, compensated and
/// refunded; each job must have been done once.
#[tokio::test]
async fn two_replicas_of_each_do_every_single_writer_job_once() -> anyhow::Result<()> {
    const ORDERS: usize = 24;
    let options = StackOptions::for_tests()?.with_replicas(2, 2).with_env(
        Service::Order,
        "SAGA_DEADLINE_MS",
        "1500",
    );
    let shop = Shop::start_with(options).await?;
    // Captures answer after the deadline: the sweep cancels every order
    // while its payment is in flight.
    shop.psp_faults(2500, 0.0).await?;
    let mut orders = Vec::new();
    for i in 0..ORDERS {
        let sku = ["SKU-0004", "SKU-0005"][i % 2];
        orders.push(shop.place(&[(sku, 1)], "tok_visa", "DE").await?);
    }
    for id in &orders {
        let order = shop.wait_terminal(id, Duration::from_secs(60)).await?;
        assert_eq!(order["status"], "CANCELLED", "{order}");
    }
    shop.wait_quiet(Duration::from_secs(60)).await?;
    assert_eq!(shop.violations().await?, Vec::<String>::new());

    let messages = shop
        .published(&[
            "order.events",
            "inventory.events",
            "payment.events",
            "shipping.events",
        ])
        .await?;
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut per_order: HashMap<(String, String), usize> = HashMap::new();
    for (_, _, payload) in &messages {
        let envelope = Envelope::decode(payload.as_slice())?;
        *ids.entry(envelope.event_id).or_default() += 1;
        *per_order
            .entry((envelope.order_id, envelope.event_type))
            .or_default() += 1;
    }
    // The relays: every outbox row reached the broker once.
    let twice: Vec<&String> = ids
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(
        twice.is_empty(),
        "events published more than once: {twice:?}"
    );
    for id in &orders {
        let count = |event_type: &str| {
            per_order
                .get(&(id.clone(), event_type.to_owned()))
                .copied()
                .unwrap_or(0)
        };
        // The sweeps: one cancellation per order, whichever replica won.
        assert_eq!(count("OrderPlaced"), 1, "order {id}");
        assert_eq!(count("OrderCancelled"), 1, "order {id}");
        // The payment claims: one capture at the provider and one refund.
        let effects = shop.effects(id).await?;
        assert!(
            effects.captures <= 1 && effects.refunds == effects.captures,
            "order {id}: {} captures, {} refunds",
            effects.captures,
            effects.refunds
        );
    }
    // Both replicas of each consumer did a share of the work.
    for service in [Service::Order, Service::Payment] {
        for index in 0..2 {
            let url = format!(
                "{}/metrics",
                shop.stack.ops_url(Replica::new(service, index))
            );
            let text = reqwest::get(&url).await?.text().await?;
            let owned =
                shipshape_e2e::metric_value(&text, "shipshape_consumer_assigned_partitions");
            assert!(
                owned.is_some_and(|owned| owned > 0.0),
                "{service} replica {index} owns partitions: {owned:?}"
            );
        }
    }
    Ok(())
}
