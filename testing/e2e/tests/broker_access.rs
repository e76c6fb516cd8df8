//! The broker's own defences, end to end (issue 18). Every service logs in
//! with a SCRAM-SHA-512 principal of its own, and the ACLs let each one
//! write only the topic it publishes on (and the dead letters), read only
//! the topics it consumes, in its own group. Tried as an attacker on the
//! network would, against a running stack:
//!
//! - a client with no credentials, or with a wrong password, gets nothing
//!   from the broker, not even the list of topics;
//! - the two forgeries of the issue, a ShipmentScheduled for an order whose
//!   payment was declined and an OrderCancelled for a confirmed, paid order,
//!   each produced on its real topic with the login of a service that does
//!   not publish there, are refused by the broker;
//! - a service's login cannot read the dead letters, nor consume in
//!   another service's group.
//!
//! Afterwards both orders are as they were, and the invariant checker
//! finds nothing. (The same forgeries written with the right login on the
//! wrong topic get through the broker and are dead-lettered by the
//! consumers: see `poison_events.rs`.)
//!
//! Two more run what the chart's production values and an operator do: a
//! broker whose listener is `SASL_SSL` carries the whole checkout and
//! serves no client that does not trust its CA or that skips TLS; and a
//! rotated password locks the old one out while the service, restarted
//! with the new one, goes on.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use prost::Message as _;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use shipshape_e2e::{Outcome, Shop};
use shipshape_kafka::{Connection, Login, Password, Protocol};
use shipshape_proto::events::{self, Envelope};
use shipshape_proto::{DEAD_LETTER_TOPIC, Event};
use shipshape_testkit::pki::Pki;
use shipshape_testkit::{Service, StackOptions};
use uuid::Uuid;

/// Long enough for a refused login to surface, short enough to keep the
/// test quick when the broker (rightly) never answers.
const ATTEMPT: Duration = Duration::from_secs(5);

/// An envelope as `producer` would publish it.
fn forged(producer: &str, order_id: &str, event: &Event) -> Vec<u8> {
    Envelope {
        event_id: Uuid::now_v7().to_string(),
        event_type: event.type_name().to_owned(),
        order_id: order_id.to_owned(),
        occurred_at_micros: 0,
        producer: producer.to_owned(),
        payload: event.encode_payload(),
    }
    .encode_to_vec()
}

/// A client context that keeps the errors librdkafka reports outside any
/// request (a refused login is one).
#[derive(Default)]
struct Errors(Mutex<Vec<String>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut errors) = self.0.lock() {
            errors.push(format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for Errors {}

/// The topics the broker lists to `connection`, or, when it lists none,
/// why: the request's error and the client's errors beside it.
async fn list_topics(connection: Connection) -> Result<usize, String> {
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer<Errors> = connection
            .client_config()
            .create_with_context(Errors::default())
            .map_err(|e| e.to_string())?;
        match client.fetch_metadata(None, ATTEMPT) {
            Ok(metadata) => Ok(metadata.topics().len()),
            Err(error) => {
                // The client's errors arrive as events, served by a poll.
                for _ in 0..5 {
                    let _ = client.poll(Duration::from_millis(100));
                }
                let seen = client.context().0.lock().map(|e| e.join("; "));
                Err(format!("{error}; {}", seen.unwrap_or_default()))
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Produces `payload` to `topic` logged in as `connection`, and returns the
/// broker's refusal; fails if the message was taken.
async fn refused_write(
    connection: &Connection,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> anyhow::Result<RDKafkaErrorCode> {
    let producer: FutureProducer = connection
        .client_config()
        .set("message.timeout.ms", ATTEMPT.as_millis().to_string())
        .create()?;
    let record = FutureRecord::to(topic).key(key).payload(payload);
    match producer.send(record, ATTEMPT).await {
        Ok(delivery) => bail!(
            "{} wrote to {topic} (partition {}, offset {})",
            connection.username().unwrap_or("anonymous"),
            delivery.partition,
            delivery.offset
        ),
        Err((KafkaError::MessageProduction(code), _)) => Ok(code),
        Err((other, _)) => bail!("not an authorization failure: {other}"),
    }
}

/// Reads `topic` from the beginning in `group`, logged in as `connection`,
/// and returns the first error the broker answers with.
async fn refused_read(connection: &Connection, topic: &str, group: &str) -> anyhow::Result<String> {
    let config = connection
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .clone();
    let (topic, group) = (topic.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        // An offset commit needs the group: reading alone may not ask.
        let committed = consumer.committed(ATTEMPT);
        let deadline = std::time::Instant::now() + ATTEMPT;
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Err(error)) => return Ok(error.to_string()),
                Some(Ok(_)) => bail!("read a message of {topic}"),
                None => {}
            }
        }
        match committed {
            Err(error) => Ok(error.to_string()),
            Ok(_) => bail!("neither the read of {topic} nor the group {group} was refused"),
        }
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_refuses_strangers_and_services_outside_their_role() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let paid = shop.place(&[("SKU-0003", 1)], "tok_visa", "DE").await?;
    shop.assert_outcome(&paid, Outcome::confirmed()).await?;
    let declined = shop.place(&[("SKU-0006", 1)], "tok_decline", "DE").await?;
    shop.assert_outcome(&declined, Outcome::declined()).await?;
    let admin = shop.stack.broker_admin();
    let topics = list_topics(admin.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    assert!(topics > 0, "the admin sees the topics");

    // No credentials at all, and a known user with a guessed password.
    let anonymous = Connection::plaintext(admin.brokers.clone());
    let error = list_topics(anonymous).await.expect_err("anonymous");
    // The broker drops a connection that does not log in first, so the
    // client finds no broker to talk to.
    assert!(error.contains("AllBrokersDown"), "no credentials: {error}");
    let payment = shop.stack.broker_login(Service::Payment)?;
    let guessed = admin.as_login(Login::scram(
        payment.username().context("payment logs in")?,
        Password::new("password123"),
    ));
    let error = list_topics(guessed).await.expect_err("a wrong password");
    assert!(
        error.contains("Authentication failed"),
        "wrong password: {error}"
    );

    // The two forgeries of the issue, on their real topics, with the login
    // of a service that may not write there.
    let ship = Event::ShipmentScheduled(events::ShipmentScheduled {
        shipment_id: Uuid::new_v4().to_string(),
        carrier: "forged".to_owned(),
    });
    let cancel = Event::OrderCancelled(events::OrderCancelled {
        reason: "timed_out".to_owned(),
    });
    let shipping_topic = shop.stack.topic("shipping.events");
    let order_topic = shop.stack.topic("order.events");
    for (login, topic, order_id, envelope) in [
        (
            Service::Payment,
            &shipping_topic,
            &declined,
            forged("shipping", &declined, &ship),
        ),
        (
            Service::Shipping,
            &order_topic,
            &paid,
            forged("order", &paid, &cancel),
        ),
        (
            Service::Inventory,
            &order_topic,
            &paid,
            forged("order", &paid, &cancel),
        ),
    ] {
        let connection = shop.stack.broker_login(login)?;
        let code = refused_write(&connection, topic, order_id, &envelope).await?;
        assert_eq!(
            code,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            "{login} writing {topic}"
        );
    }

    // Reading what is not its to read.
    let dead_letters = shop.stack.topic(DEAD_LETTER_TOPIC);
    let own_group = shop.stack.topic("shipshape-payment");
    let error = refused_read(&payment, &dead_letters, &own_group).await?;
    assert!(
        error.contains("authoriz"),
        "payment reading the dead letters: {error}"
    );
    let orders_group = shop.stack.topic("shipshape-order");
    let error = refused_read(&payment, &order_topic, &orders_group).await?;
    assert!(
        error.contains("authoriz"),
        "payment in order's group: {error}"
    );

    // Nothing happened: the declined order was not shipped, the paid one
    // not cancelled or refunded.
    shop.assert_outcome(&paid, Outcome::confirmed()).await?;
    shop.assert_outcome(&declined, Outcome::declined()).await?;
    shop.wait_quiet(Duration::from_secs(30)).await?;
    let violations = shop.violations().await?;
    assert!(violations.is_empty(), "{violations:#?}");
    shop.stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_broker_serves_only_clients_that_trust_its_ca() -> anyhow::Result<()> {
    let shop = Shop::start_with(StackOptions::for_tests()?.with_broker_tls()).await?;
    // The services reach the broker over SASL_SSL only: a checkout that
    // confirms went through it, every event and every commit.
    let paid = shop.place(&[("SKU-0003", 1)], "tok_visa", "DE").await?;
    shop.assert_outcome(&paid, Outcome::confirmed()).await?;
    let payment = shop.stack.broker_login(Service::Payment)?;
    assert_eq!(payment.protocol, Protocol::SaslSsl);
    let topics = list_topics(payment.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    assert!(topics > 0, "payment sees its topics over TLS");

    // The right login, but trusting only the system's CAs, or a CA of
    // someone else's: the client refuses the broker's certificate before
    // it sends the login.
    let intruder = Pki::ca_only(&shop.stack.log_dir().join("intruder-tls"), "Intruder CA")?;
    for (what, ca_location) in [
        ("the system's CAs", None),
        ("another CA", Some(intruder.ca_path())),
    ] {
        let untrusting = Connection {
            ca_location,
            ..payment.clone()
        };
        let error = list_topics(untrusting).await.expect_err(what);
        assert!(
            error.contains("certificate verify failed"),
            "trusting {what}: {error}"
        );
    }

    // The right login without TLS: the listener takes no plaintext.
    let plaintext = Connection {
        protocol: Protocol::SaslPlaintext,
        ca_location: None,
        ..payment
    };
    let error = list_topics(plaintext).await.expect_err("plaintext");
    assert!(error.contains("AllBrokersDown"), "plaintext: {error}");

    shop.wait_quiet(Duration::from_secs(30)).await?;
    let violations = shop.violations().await?;
    assert!(violations.is_empty(), "{violations:#?}");
    shop.stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_locks_out_the_old_one_and_the_service_goes_on() -> anyhow::Result<()> {
    let mut shop = Shop::start().await?;
    let before = shop.stack.broker_login(Service::Payment)?;
    shop.stack.rotate_broker_password(Service::Payment).await?;
    let after = shop.stack.broker_login(Service::Payment)?;
    assert_ne!(before.login, after.login, "a new password");

    let error = list_topics(before).await.expect_err("the old password");
    assert!(
        error.contains("Authentication failed"),
        "old password: {error}"
    );
    list_topics(after).await.map_err(anyhow::Error::msg)?;

    // The payment service is still logged in on the connections it opened
    // with the old password, so checkouts go on until it restarts...
    let during = shop.place(&[("SKU-0003", 1)], "tok_visa", "DE").await?;
    shop.assert_outcome(&during, Outcome::confirmed()).await?;
    // ...and once restarted it logs in with the new one.
    shop.stack.terminate(Service::Payment).await?;
    shop.stack.start_service(Service::Payment).await?;
    let after_restart = shop.place(&[("SKU-0003", 1)], "tok_visa", "DE").await?;
    shop.assert_outcome(&after_restart, Outcome::confirmed())
        .await?;

    shop.wait_quiet(Duration::from_secs(30)).await?;
    let violations = shop.violations().await?;
    assert!(violations.is_empty(), "{violations:#?}");
    shop.stack.stop().await
}
