//! Poison events, end to end: messages no well-behaved producer sends are put
//! in front of every consumer, on every partition of every topic, and each
//! is handled as the design says without stopping anything.
//!
//! - Undecodable: bytes that are no envelope, a null value (tombstone), a
//!   valid envelope of an unknown event type, a known type whose payload
//!   does not decode, an envelope whose event id is no UUID. Every consumer
//!   group of the topic dead-letters it at once, with the reason in
//!   `dlq.error` (`shared/messaging/src/consumer/dead_letter.rs`, `envelope.rs`).
//! - Forged provenance (issue 18's attacks): an OrderCancelled for a
//!   confirmed, paid order and a ShipmentScheduled for a declined one,
//!   written on the writer's own topic, or on the right topic under another
//!   service's name. Every consumer group of the topic dead-letters them
//!   (`envelope::check_provenance`); the first order is not refunded, the
//!   second not shipped.
//! - An event that decodes but which a handler rejects every time (an
//!   OrderPlaced without a total, for the payment service): retried, then
//!   dead-lettered by that consumer group alone, with the last error.
//! - A well-formed event for an order that does not exist: ignored. The
//!   order service records it in its inbox and changes nothing
//!   (`services/order/src/events.rs`, `Advanced::UnknownOrder`); no dead
//!   letter.
//! - A redelivery of a real event id with a conflicting body: ignored. The
//!   inbox keys on the event id alone, so the body is never looked at; no
//!   dead letter, no second effect. (Each service's inbox holds only the
//!   events it acted on: the first order's PaymentCaptured id sent again as
//!   a PaymentDeclined is new to inventory, which finds the reservation
//!   already committed and changes nothing.)
//!
//! Afterwards no service process has exited or restarted, every consumer
//! group has committed every partition (the offsets moved past the poison),
//! and an order placed after all of it is confirmed.
//!
//! A second test puts undecodable bytes of nearly the largest size a
//! producer may send in front of every partition of one topic: the dead
//! letter (the same bytes plus its `dlq.*` headers) must not be too large to
//! publish, or the partition never moves on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use shipshape_e2e::poison::Raw;
use shipshape_e2e::{Outcome, Shop};
use shipshape_kafka::Connection;
use shipshape_proto::producer_of;
use shipshape_testkit::{Service, StackOptions};
use uuid::Uuid;

/// Every topic a service consumes, with the consumer groups reading it.
const TOPICS: [(&str, &[&str]); 4] = [
    (
        "order.events",
        &[
            "shipshape-inventory",
            "shipshape-payment",
            "shipshape-shipping",
        ],
    ),
    (
        "inventory.events",
        &["shipshape-order", "shipshape-payment"],
    ),
    (
        "payment.events",
        &[
            "shipshape-inventory",
            "shipshape-order",
            "shipshape-shipping",
        ],
    ),
    (
        "shipping.events",
        &[
            "shipshape-inventory",
            "shipshape-order",
            "shipshape-payment",
        ],
    ),
];

/// The services whose processes must survive.
const SERVICES: [Service; 6] = [
    Service::Gateway,
    Service::Order,
    Service::Inventory,
    Service::Payment,
    Service::Shipping,
    Service::Psp,
];

const WAIT: Duration = Duration::from_secs(60);

/// Failed attempts before the payment service dead-letters an event its
/// handler keeps rejecting (10 by default: seconds of backoff).
const PAYMENT_MAX_ATTEMPTS: u32 = 3;

// --- A little protobuf, by hand: the e2e crate speaks only bytes. ---

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field (string, bytes, embedded message).
fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(field << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    varint(field << 3, out);
    varint(value, out);
}

/// `shipshape.events.v1.Envelope`, naming `producer` as its publisher.
fn envelope(
    producer: &str,
    event_id: &str,
    event_type: &str,
    order_id: &str,
    payload: &[u8],
) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = Vec::new();
    bytes_field(&mut out, 1, event_id.as_bytes());
    bytes_field(&mut out, 2, event_type.as_bytes());
    bytes_field(&mut out, 3, order_id.as_bytes());
    varint_field(&mut out, 4, now.as_micros() as u64);
    bytes_field(&mut out, 5, producer.as_bytes());
    bytes_field(&mut out, 6, payload);
    out
}

fn read_varint(bytes: &[u8], at: &mut usize) -> anyhow::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).context("truncated varint")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    bail!("varint too long")
}

/// The length-delimited fields of a message, by number (varints skipped).
fn decode(bytes: &[u8]) -> anyhow::Result<BTreeMap<u64, Vec<u8>>> {
    let mut fields = BTreeMap::new();
    let mut at = 0;
    while at < bytes.len() {
        let tag = read_varint(bytes, &mut at)?;
        match tag & 7 {
            0 => {
                read_varint(bytes, &mut at)?;
            }
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut at)?)?;
                let value = bytes.get(at..at + len).context("truncated field")?;
                fields.insert(tag >> 3, value.to_vec());
                at += len;
            }
            wire => bail!("unexpected wire type {wire}"),
        }
    }
    Ok(fields)
}

/// A published event, as read back from its topic.
struct Published {
    partition: i32,
    event_id: String,
    event_type: String,
    order_id: String,
    payload: Vec<u8>,
}

/// Every envelope on `topic`, read through `connection` from the beginning
/// of each partition.
fn read_topic(connection: &Connection, topic: &str) -> anyhow::Result<Vec<Published>> {
    let consumer: BaseConsumer = connection
        .client_config()
        .set("group.id", format!("e2e-poison-reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0;
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
        expected += high - low;
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut events = Vec::new();
    let mut read = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while read < expected && std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        read += 1;
        let fields = decode(message.payload().unwrap_or_default())?;
        let text = |n| String::from_utf8_lossy(fields.get(&n).map_or(&[][..], |v| v)).into_owned();
        events.push(Published {
            partition: message.partition(),
            event_id: text(1),
            event_type: text(2),
            order_id: text(3),
            payload: fields.get(&6).cloned().unwrap_or_default(),
        });
    }
    anyhow::ensure!(
        read == expected,
        "read {read} of {expected} messages of {topic}"
    );
    Ok(events)
}

/// The one event of `event_type` for `order_id` on `topic`.
async fn find_event(
    shop: &Shop,
    topic: &str,
    event_type: &str,
    order_id: &str,
) -> anyhow::Result<Published> {
    let connection = shop.stack.broker_admin();
    let owned = shop.stack.topic(topic);
    let events = tokio::task::spawn_blocking(move || read_topic(&connection, &owned)).await??;
    let mut found: Vec<Published> = events
        .into_iter()
        .filter(|e| e.event_type == event_type && e.order_id == order_id)
        .collect();
    anyhow::ensure!(
        found.len() == 1,
        "{} {event_type} events of order {order_id} on {topic}",
        found.len()
    );
    Ok(found.remove(0))
}

/// A poison message whose dead letters are expected: what it is, and what
/// `dlq.error` must say.
struct Expected {
    what: &'static str,
    reason: String,
    /// The consumer groups that dead-letter it, sorted.
    groups: Vec<String>,
}

#[tokio::test]
async fn poison_events_are_dead_lettered_or_ignored_and_orders_keep_flowing() -> anyhow::Result<()>
{
    let started = std::time::Instant::now();
    let options = StackOptions::for_tests()?.with_env(
        Service::Payment,
        "CONSUMER_MAX_ATTEMPTS",
        PAYMENT_MAX_ATTEMPTS.to_string(),
    );
    let mut shop = Shop::start_with(options).await?;
    let pids: Vec<Option<u32>> = SERVICES.iter().map(|s| shop.stack.pid(*s)).collect();

    // A real order, whose events are duplicated with other bodies below.
    let first = shop.place(&[("SKU-0003", 2)], "tok_visa", "DE").await?;
    shop.assert_outcome(&first, Outcome::confirmed()).await?;
    let placed = find_event(&shop, "order.events", "OrderPlaced", &first).await?;
    let captured = find_event(&shop, "payment.events", "PaymentCaptured", &first).await?;
    // An order whose card was declined: a forged ShipmentScheduled must not
    // confirm it.
    let declined_order = shop.place(&[("SKU-0006", 1)], "tok_decline", "DE").await?;
    shop.assert_outcome(&declined_order, Outcome::declined())
        .await?;
    let first_payment_id: uuid::Uuid =
        sqlx::query_scalar("SELECT payment_id FROM payments WHERE order_id = $1")
            .bind(Uuid::parse_str(&first)?)
            .fetch_one(shop.db(Service::Payment))
            .await?;

    // 1. Undecodable poison, on every partition of every topic.
    let mut undecodable: Vec<(Raw, Expected)> = Vec::new();
    let mut ghosts: Vec<(Raw, String, String)> = Vec::new();
    for (topic, _) in TOPICS {
        for partition in 0..shop.partitions(topic).await? {
            let raw = |key: &str, payload: Option<Vec<u8>>| Raw {
                topic: topic.to_owned(),
                partition,
                key: Some(key.as_bytes().to_vec()),
                payload,
            };
            // Events a topic carries name the service that publishes it.
            let owner = producer_of(topic).context("one of our topics")?;
            let order_id = Uuid::new_v4().to_string();
            let event_id = Uuid::now_v7().to_string();
            undecodable.push((
                raw("poison", Some(b"\xde\xad\xbe\xef not an envelope".to_vec())),
                Expected {
                    what: "undecodable bytes",
                    reason: "not an event envelope".into(),
                    groups: groups_of(topic),
                },
            ));
            undecodable.push((
                raw("poison", None),
                Expected {
                    what: "null value (tombstone)",
                    reason: "empty message".into(),
                    groups: groups_of(topic),
                },
            ));
            undecodable.push((
                raw(
                    &order_id,
                    Some(envelope(
                        owner,
                        &event_id,
                        "OrderTeleported",
                        &order_id,
                        b"",
                    )),
                ),
                Expected {
                    what: "envelope of an unknown type",
                    reason: "unknown event type `OrderTeleported`".into(),
                    groups: groups_of(topic),
                },
            ));
            undecodable.push((
                raw(
                    &order_id,
                    Some(envelope(
                        owner,
                        &event_id,
                        "PaymentCaptured",
                        &order_id,
                        b"\xff\xff\xff",
                    )),
                ),
                Expected {
                    what: "known type, payload not decodable",
                    reason: "malformed `PaymentCaptured` payload".into(),
                    groups: groups_of(topic),
                },
            ));
            undecodable.push((
                raw(
                    &order_id,
                    Some(envelope(
                        owner,
                        "not-a-uuid",
                        "StockReserved",
                        &order_id,
                        b"",
                    )),
                ),
                Expected {
                    what: "event id not a UUID",
                    reason: "envelope field `event_id` is invalid: `not-a-uuid`".into(),
                    groups: groups_of(topic),
                },
            ));
            if topic == "order.events" {
                // Decodes, but the payment handler rejects it every time
                // (an OrderPlaced without a total): retried, then
                // dead-lettered by payment alone. Inventory rejects its
                // (missing) lines and shipping waits for more facts, as for
                // any OrderPlaced; neither fails.
                let rejected = Uuid::new_v4().to_string();
                undecodable.push((
                    raw(
                        &rejected,
                        Some(envelope(
                            owner,
                            &Uuid::now_v7().to_string(),
                            "OrderPlaced",
                            &rejected,
                            b"",
                        )),
                    ),
                    Expected {
                        what: "OrderPlaced the payment handler rejects",
                        reason: format!(
                            "failed {PAYMENT_MAX_ATTEMPTS} times, last: OrderPlaced without a total"
                        ),
                        groups: vec!["shipshape-payment".to_owned()],
                    },
                ));
            }

            // 2. A well-formed event, of the kind this topic carries, for an
            // order nobody knows.
            let ghost_type = match topic {
                "order.events" => "OrderConfirmed",
                "inventory.events" => "StockReserved",
                "payment.events" => "PaymentCaptured",
                _ => "ShipmentScheduled",
            };
            let ghost_order = Uuid::new_v4().to_string();
            let ghost_event = Uuid::now_v7().to_string();
            ghosts.push((
                raw(
                    &ghost_order,
                    Some(envelope(owner, &ghost_event, ghost_type, &ghost_order, b"")),
                ),
                ghost_order,
                ghost_event,
            ));
        }
    }

    // 2b. Forged provenance: the two attacks of issue 18, each written
    // where the writer's own credentials let it write (its own topic), or
    // on the right topic under another service's name. Every group of the
    // topic dead-letters them, and nothing changes (checked below): the
    // confirmed order is not refunded, the declined one not shipped.
    let mut cancel_first = Vec::new();
    bytes_field(&mut cancel_first, 1, b"timed_out");
    let forged = [
        (
            "payment.events",
            "payment",
            "OrderCancelled",
            &first,
            cancel_first.clone(),
            "provenance: `OrderCancelled` events belong on order.events, not on payment.events",
        ),
        (
            "order.events",
            "shipping",
            "OrderCancelled",
            &first,
            cancel_first,
            "provenance: events on order.events come from `order`, not from `shipping`",
        ),
        (
            "payment.events",
            "payment",
            "ShipmentScheduled",
            &declined_order,
            Vec::new(),
            "provenance: `ShipmentScheduled` events belong on shipping.events, not on payment.events",
        ),
        (
            "shipping.events",
            "payment",
            "ShipmentScheduled",
            &declined_order,
            Vec::new(),
            "provenance: events on shipping.events come from `shipping`, not from `payment`",
        ),
    ];
    for (topic, producer, event_type, order_id, payload, reason) in forged {
        let event_id = Uuid::now_v7().to_string();
        undecodable.push((
            Raw {
                topic: topic.to_owned(),
                partition: 0,
                key: Some(order_id.as_bytes().to_vec()),
                payload: Some(envelope(
                    producer, &event_id, event_type, order_id, &payload,
                )),
            },
            Expected {
                what: "an event of forged provenance",
                reason: reason.to_owned(),
                groups: groups_of(topic),
            },
        ));
    }

    // 3. Real event ids again, with conflicting bodies: the OrderPlaced of
    // the first order with one more line and another card (protobuf merges
    // appended fields), and its PaymentCaptured turned into a decline.
    let mut more_lines = placed.payload.clone();
    let mut line = Vec::new();
    bytes_field(&mut line, 1, b"SKU-0005");
    varint_field(&mut line, 2, 7);
    bytes_field(&mut more_lines, 2, &line);
    bytes_field(&mut more_lines, 4, b"tok_chargeback");
    let mut declined = Vec::new();
    bytes_field(&mut declined, 1, b"insufficient_funds");
    let duplicates = [
        Raw {
            topic: "order.events".into(),
            partition: placed.partition,
            key: Some(first.as_bytes().to_vec()),
            payload: Some(envelope(
                "order",
                &placed.event_id,
                "OrderPlaced",
                &first,
                &more_lines,
            )),
        },
        Raw {
            topic: "payment.events".into(),
            partition: captured.partition,
            key: Some(first.as_bytes().to_vec()),
            payload: Some(envelope(
                "payment",
                &captured.event_id,
                "PaymentDeclined",
                &first,
                &declined,
            )),
        },
    ];

    let mut messages: Vec<Raw> = undecodable.iter().map(|(raw, _)| raw.clone()).collect();
    messages.extend(ghosts.iter().map(|(raw, _, _)| raw.clone()));
    messages.extend(duplicates.iter().cloned());
    let landed = shop.publish_poison(&messages).await?;
    let (poison_sources, harmless_sources) = landed.split_at(undecodable.len());
    let expected: BTreeMap<(String, i32, i64), &Expected> = poison_sources
        .iter()
        .zip(&undecodable)
        .map(|(s, (_, e))| ((s.topic.clone(), s.partition, s.offset), e))
        .collect();

    // Only now, behind every piece of poison on every partition: a normal
    // order, whose events must get past it.
    let second = shop.place(&[("SKU-0004", 1)], "tok_visa", "DE").await?;
    shop.assert_outcome(&second, Outcome::confirmed()).await?;

    // Every consumer group of each undecodable message's topic dead-lettered
    // it, once, with the reason; nothing else was dead-lettered.
    let expected_letters: usize = expected.values().map(|e| e.groups.len()).sum();
    let deadline = tokio::time::Instant::now() + WAIT;
    let letters = loop {
        let letters = shop.dead_letters().await?;
        if letters.len() >= expected_letters || tokio::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut groups: BTreeMap<(String, i32, i64), Vec<String>> = BTreeMap::new();
    for headers in &letters {
        let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
        let source = (
            header("dlq.source.topic"),
            header("dlq.source.partition").parse().unwrap_or(-1),
            header("dlq.source.offset").parse().unwrap_or(-1),
        );
        let Some(poison) = expected.get(&source) else {
            let harmless = harmless_sources
                .iter()
                .any(|s| (&s.topic, s.partition, s.offset) == (&source.0, source.1, source.2));
            bail!(
                "unexpected dead letter ({}): {headers:?}",
                if harmless {
                    "of an event for an unknown order or of a conflicting duplicate, \
                     which must be ignored"
                } else {
                    "of no poison message"
                }
            );
        };
        let error = header("dlq.error");
        assert!(
            error.contains(&poison.reason),
            "{}: dlq.error {error:?} does not name {:?}",
            poison.what,
            poison.reason
        );
        // Groups as the services name them, without the stack's prefix.
        let group = header("dlq.consumer.group");
        let group = group
            .strip_prefix(shop.stack.topic_prefix())
            .with_context(|| format!("group {group} lacks the stack's topic prefix"))?;
        groups.entry(source).or_default().push(group.to_owned());
    }
    for (source, poison) in &expected {
        let mut got = groups.get(source).cloned().unwrap_or_default();
        got.sort();
        assert_eq!(
            got, poison.groups,
            "{} at {}:{}@{}: one dead letter per consumer group",
            poison.what, source.0, source.1, source.2
        );
    }
    assert_eq!(letters.len(), expected_letters, "dead letters");
    // Counted by processes that never restarted.
    for (service, group) in [
        (Service::Order, "shipshape-order"),
        (Service::Inventory, "shipshape-inventory"),
        (Service::Payment, "shipshape-payment"),
        (Service::Shipping, "shipshape-shipping"),
    ] {
        for (topic, readers) in TOPICS {
            if !readers.contains(&group) {
                continue;
            }
            let on_broker = shop.stack.topic(topic);
            let per_topic = expected
                .iter()
                .filter(|((t, _, _), e)| *t == on_broker && e.groups.iter().any(|g| g == group))
                .count();
            let series = format!("shipshape_dead_letters_total{{topic=\"{on_broker}\"}}");
            let count = shop.metric(service, &series).await?;
            assert_eq!(count, Some(per_topic as f64), "{service} {series}");
        }
    }

    // Events for unknown orders: the order service took each one it reads
    // (recorded in its inbox) and made no order of it.
    let ghost_orders: Vec<Uuid> = ghosts
        .iter()
        .map(|(_, order, _)| Uuid::parse_str(order))
        .collect::<Result<_, _>>()?;
    let ignored_by_order: Vec<Uuid> = ghosts
        .iter()
        .filter(|(raw, _, _)| raw.topic != "order.events")
        .map(|(_, _, event)| Uuid::parse_str(event))
        .collect::<Result<_, _>>()?;
    let known: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE order_id = ANY($1)")
        .bind(&ghost_orders)
        .fetch_one(shop.db(Service::Order))
        .await?;
    assert_eq!(known, 0, "an event for an unknown order created an order");
    let taken: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE event_id = ANY($1)")
        .bind(&ignored_by_order)
        .fetch_one(shop.db(Service::Order))
        .await?;
    assert_eq!(
        taken,
        ignored_by_order.len() as i64,
        "the order service consumed (and ignored) every event for an unknown order"
    );
    let reservations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reservations WHERE order_id = ANY($1)")
            .bind(&ghost_orders)
            .fetch_one(shop.db(Service::Inventory))
            .await?;
    assert_eq!(
        reservations, 0,
        "OrderConfirmed of an unknown order settled stock"
    );

    // The conflicting duplicates changed nothing about the first order.
    let order = shop.wait_terminal(&first, WAIT).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let effects = shop.effects(&first).await?;
    assert_eq!(effects.reservation.as_deref(), Some("COMMITTED"));
    assert_eq!(effects.payment.as_deref(), Some("CAPTURED"));
    assert_eq!(effects.shipment.as_deref(), Some("SCHEDULED"));
    assert_eq!((effects.captures, effects.refunds), (1, 0));
    assert_eq!(shop.available("SKU-0003").await?, 498, "reserved once");
    assert_eq!(shop.available("SKU-0005").await?, 500, "no extra line");
    let payment_id: uuid::Uuid =
        sqlx::query_scalar("SELECT payment_id FROM payments WHERE order_id = $1")
            .bind(Uuid::parse_str(&first)?)
            .fetch_one(shop.db(Service::Payment))
            .await?;
    assert_eq!(payment_id, first_payment_id);
    let inventory_saw: Option<String> =
        sqlx::query_scalar("SELECT event_type FROM inbox WHERE event_id = $1")
            .bind(Uuid::parse_str(&placed.event_id)?)
            .fetch_optional(shop.db(Service::Inventory))
            .await?;
    assert_eq!(inventory_saw.as_deref(), Some("OrderPlaced"));

    // The forged ShipmentScheduled events shipped nothing.
    shop.assert_outcome(&declined_order, Outcome::declined())
        .await?;

    // No process crashed or was restarted, and every consumer group has
    // committed every partition (checked by `assert_outcome` above).
    let exited = shop.stack.exited()?;
    assert!(exited.is_empty(), "processes exited: {exited:?}");
    let now: Vec<Option<u32>> = SERVICES.iter().map(|s| shop.stack.pid(*s)).collect();
    assert_eq!(now, pids, "no process was restarted");
    shop.wait_quiet(Duration::from_secs(10)).await?;
    assert_eq!(shop.violations().await?, Vec::<String>::new());
    eprintln!(
        "{} poison messages, {} dead letters, in {:?}",
        landed.len(),
        letters.len(),
        started.elapsed()
    );
    Ok(())
}

/// The consumer groups of `topic`, sorted.
fn groups_of(topic: &str) -> Vec<String> {
    let groups: BTreeSet<String> = TOPICS
        .iter()
        .filter(|(t, _)| *t == topic)
        .flat_map(|(_, groups)| groups.iter().map(|g| (*g).to_owned()))
        .collect();
    groups.into_iter().collect()
}

#[test]
fn hand_made_envelopes_decode_back() {
    let bytes = envelope("inventory", "id", "StockReserved", "order", b"\x01\x02");
    let fields = decode(&bytes).unwrap();
    assert_eq!(fields[&1], b"id");
    assert_eq!(fields[&2], b"StockReserved");
    assert_eq!(fields[&3], b"order");
    assert_eq!(fields[&5], b"inventory");
    assert_eq!(fields[&6], b"\x01\x02");
}

/// A payload just under the 1 000 000 bytes a Kafka client sends by default
/// (`message.max.bytes`), so any producer with default settings, as the
/// services' own, can publish it.
const NEAR_MAX_PAYLOAD: usize = 999_800;

#[tokio::test]
async fn undecodable_bytes_of_nearly_the_largest_size_are_dead_lettered_and_the_partition_moves_on()
-> anyhow::Result<()> {
    let mut shop = Shop::start().await?;
    let pids: Vec<Option<u32>> = SERVICES.iter().map(|s| shop.stack.pid(*s)).collect();
    let topic = "shipping.events";
    let mut payload = vec![0xff; NEAR_MAX_PAYLOAD];
    payload[..4].copy_from_slice(b"\xde\xad\xbe\xef");
    let messages: Vec<Raw> = (0..shop.partitions(topic).await?)
        .map(|partition| Raw {
            topic: topic.to_owned(),
            partition,
            key: Some(b"poison".to_vec()),
            payload: Some(payload.clone()),
        })
        .collect();
    let landed = shop.publish_poison(&messages).await?;

    // Shipping events drive every order to its outcome: this one confirms
    // only if the order service got past the poison on its partition.
    let order_id = shop.place(&[("SKU-0006", 1)], "tok_visa", "DE").await?;
    let terminal = shop.wait_terminal(&order_id, Duration::from_secs(25)).await;
    // The order proves only the order service got past its partition; the
    // other groups' dead letters may still be on their way.
    let expected = landed.len() * groups_of(topic).len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let letters = loop {
        let letters = shop.dead_letters().await?;
        if letters.len() >= expected || tokio::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let exited = shop.stack.exited()?;
    let status = terminal
        .as_ref()
        .map(|order| order["status"].to_string())
        .unwrap_or_else(|e| e.to_string());
    assert!(
        matches!(&terminal, Ok(order) if order["status"] == "CONFIRMED")
            && letters.len() == expected,
        "{} messages of {NEAR_MAX_PAYLOAD} bytes on {topic}: the order placed after them is \
         {status}, and {} of {} dead letters were published (a dead letter too large to \
         publish is retried for ever, so its partition never moves on; see \
         `dead-letter publish failed` in the logs under {})",
        landed.len(),
        letters.len(),
        expected,
        shop.stack.log_dir().display()
    );
    for headers in &letters {
        assert!(
            headers["dlq.error"].contains("not an event envelope"),
            "{headers:?}"
        );
        // Too large to forward whole: dead-lettered without its body, and
        // saying so.
        assert!(
            headers
                .get("dlq.body.dropped")
                .is_some_and(|sizes| sizes.contains(&format!("payload {NEAR_MAX_PAYLOAD} bytes"))),
            "{headers:?}"
        );
    }
    assert!(exited.is_empty(), "processes exited: {exited:?}");
    let now: Vec<Option<u32>> = SERVICES.iter().map(|s| shop.stack.pid(*s)).collect();
    assert_eq!(now, pids, "no process was restarted");
    shop.assert_outcome(&order_id, Outcome::confirmed()).await?;
    Ok(())
}
