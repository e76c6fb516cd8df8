//! The consumer loop against the real broker: a message that keeps failing
//! holds back only its own partition, its offset is not committed while it
//! is retried, and once it passes the partition resumes in order, with
//! nothing lost even though the backlog behind it paused the partition.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use shipshape_kafka::Connection;
use shipshape_messaging::envelope::seal;
use shipshape_messaging::{Broker, Delivery, GroupProtocol, HandleError, Handler, KafkaSettings};
use shipshape_proto::{Event, ORDER_EVENTS, events};
use shipshape_testkit::broker::TestBroker;
use shipshape_types::OrderId;
use tokio_util::sync::CancellationToken;

/// Fails every event of the orders in `stuck` as a database outage would
/// (transient: retried, never dead-lettered) and records the others in
/// the order they were handled.
#[derive(Clone, Default)]
struct Recorder {
    stuck: Arc<Mutex<HashSet<OrderId>>>,
    handled: Arc<Mutex<Vec<OrderId>>>,
}

impl Recorder {
    fn handled(&self) -> Vec<OrderId> {
        self.handled.lock().expect("lock").clone()
    }
}

/// All of a batch or none of it, as a transaction would.
impl Handler for Recorder {
    async fn handle(&self, batch: &[Delivery]) -> Result<(), HandleError> {
        let stuck = self.stuck.lock().expect("lock");
        if batch.iter().any(|d| stuck.contains(&d.message.order_id)) {
            return Err(HandleError::Database(sqlx::Error::PoolTimedOut));
        }
        let mut handled = self.handled.lock().expect("lock");
        handled.extend(batch.iter().map(|d| d.message.order_id));
        Ok(())
    }
}

fn settings(admin: &Connection, topic_prefix: &str, group: &str) -> KafkaSettings {
    KafkaSettings {
        connection: admin.clone(),
        topic_prefix: topic_prefix.to_owned(),
        group_id: group.to_owned(),
        group_protocol: GroupProtocol::Classic,
        fetch_wait_ms: 10,
        fetch_min_bytes: 1,
        linger_ms: 0,
        session_timeout_ms: 6000,
        partitions: 2,
        replication: 1,
        concurrency: 2,
        max_attempts: 3,
        max_batch: shipshape_messaging::kafka::DEFAULT_MAX_BATCH,
    }
}

/// Waits until `done` holds, or fails the test after `within`.
async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The group's committed offset of each partition of `topic` (`None` when
/// nothing was committed).
fn committed(admin: &Connection, topic: &str, group: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = admin
        .client_config()
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let offsets = consumer
        .committed_offsets(list, Duration::from_secs(5))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |partition| match offsets.find_partition(topic, partition).map(|p| p.offset()) {
                Some(Offset::Offset(offset)) => Some(offset),
                _ => None,
            },
        )
        .collect()
}

/// The consumer's gauge of paused partitions, as `/metrics` would show it.
fn paused_partitions() -> Option<f64> {
    let text = shipshape_runtime::metrics::render();
    text.lines().find_map(|line| {
        line.strip_prefix("shipshape_consumer_paused_partitions ")?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_message_holds_back_only_its_own_partition() {
    shipshape_runtime::metrics::install();
    let logs = std::env::temp_dir().join(format!("shipshape-partitions-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&logs).expect("log dir");
    let test_broker = TestBroker::start(&logs).await.expect("broker");
    let admin = test_broker.admin();
    // Names of its own, in case the broker is the run's shared one.
    let prefix = shipshape_testkit::broker::test_topic_prefix();
    let topic = format!("{prefix}{ORDER_EVENTS}");
    let group = &format!("{prefix}partition-isolation");
    let broker = Broker::connect(settings(&admin, &prefix, group), &[ORDER_EVENTS])
        .await
        .expect("connect");

    let recorder = Recorder::default();
    let blocked = OrderId::generate();
    recorder.stuck.lock().expect("lock").insert(blocked);
    let shutdown = CancellationToken::new();
    let consumer = broker.consumer(vec![ORDER_EVENTS], recorder.clone());
    let consuming = tokio::spawn(consumer.run(shutdown.clone()));

    let publish = |partition: i32, order_id: OrderId| {
        let payload = seal(
            "order",
            order_id,
            &Event::OrderConfirmed(events::OrderConfirmed {}),
        )
        .encode_to_vec();
        let producer = broker.producer.clone();
        let topic = topic.clone();
        async move {
            let key = order_id.to_string();
            producer
                .send(
                    FutureRecord::to(&topic)
                        .partition(partition)
                        .key(&key)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("publish");
        }
    };

    // Partition 0: the stuck order, then more than a pause's worth behind it.
    publish(0, blocked).await;
    let behind: Vec<OrderId> = (0..100).map(|_| OrderId::generate()).collect();
    for &order_id in &behind {
        publish(0, order_id).await;
    }
    // Partition 1 flows meanwhile.
    let other: Vec<OrderId> = (0..20).map(|_| OrderId::generate()).collect();
    for &order_id in &other {
        publish(1, order_id).await;
    }
    eventually(
        Duration::from_secs(30),
        "partition 1 handled while partition 0 is stuck",
        || recorder.handled() == other,
    )
    .await;

    // Long enough for several auto-commits: the stuck partition's offset
    // must not move past the failing message.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        recorder.handled().iter().all(|id| !behind.contains(id)),
        "nothing behind the failing message may be handled"
    );
    let offsets = committed(&admin, &topic, group, 2);
    assert_eq!(offsets[1], Some(other.len() as i64), "{offsets:?}");
    assert_eq!(offsets[0], None, "{offsets:?}");
    assert_eq!(
        paused_partitions(),
        Some(1.0),
        "the backlog paused partition 0"
    );

    // The outage ends: partition 0 resumes in order, nothing lost although
    // its backlog paused the partition.
    recorder.stuck.lock().expect("lock").clear();
    let mut expected_0 = vec![blocked];
    expected_0.extend(&behind);
    eventually(Duration::from_secs(30), "partition 0 drained", || {
        recorder.handled().len() == other.len() + expected_0.len()
    })
    .await;
    let handled_0: Vec<OrderId> = recorder
        .handled()
        .into_iter()
        .filter(|id| !other.contains(id))
        .collect();
    assert_eq!(handled_0, expected_0, "partition 0 in order, exactly once");
    eventually(Duration::from_secs(10), "partition 0 committed", || {
        committed(&admin, &topic, group, 2)[0] == Some(expected_0.len() as i64)
    })
    .await;
    assert_eq!(paused_partitions(), Some(0.0), "partition 0 resumed");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), consuming)
        .await
        .expect("consumer stops")
        .expect("join")
        .expect("consumer result");
    test_broker.stop().await.expect("the broker stops");
    let _ = std::fs::remove_dir_all(&logs);
}
