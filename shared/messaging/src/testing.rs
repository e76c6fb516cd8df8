//! Running a service inside a test process, against the real broker: its
//! settings for the test's database and broker, the service started with
//! [`App`] ([`RunningService`]), and a [`TestBus`] that plays the other
//! services, publishing their events and reading the service's. Behind the
//! `testing` feature, which only tests turn on.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shipshape_proto::{Event, common, events};
use shipshape_runtime::CancellationToken;
use shipshape_runtime::database::DatabaseConfig;
use shipshape_runtime::grpc::ServerSettings;
use shipshape_testkit::BackingServices;
use shipshape_types::OrderId;
use tokio::task::JoinHandle;
use tokio_util::sync::DropGuard;

use crate::consumer::GroupMembership;
use crate::kafka::DEFAULT_PARTITIONS;
use crate::service::{App, ServiceConfig, ServiceSpec};
use crate::{GroupProtocol, KafkaSettings, envelope};

/// How long a stopping service has to drain: its consumer leaving the
/// group and its last relay batch take a few seconds at most.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the bus waits for the broker to take an event.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings that run `S` beside a test on `backing`: its database there,
/// the broker with every topic and its consumer group under the test's
/// prefix (so tests sharing a broker never see each other's events), its
/// ops server on a free port of 127.0.0.1, and the defaults the services
/// run with otherwise.
pub fn service_config<S: ServiceSpec>(backing: &BackingServices) -> anyhow::Result<ServiceConfig> {
    let topic_prefix = backing.topic_prefix();
    Ok(ServiceConfig {
        database: DatabaseConfig {
            url: backing.database_url(S::ROLE.service)?.to_owned(),
            max_connections: 10,
        },
        kafka: KafkaSettings {
            connection: backing.kafka()?,
            topic_prefix: topic_prefix.to_owned(),
            group_id: shipshape_kafka::grants::group_id(topic_prefix, S::ROLE.service),
            group_protocol: GroupProtocol::Classic,
            fetch_wait_ms: 10,
            fetch_min_bytes: 1,
            linger_ms: 0,
            session_timeout_ms: 6000,
            partitions: DEFAULT_PARTITIONS,
            replication: 1,
            concurrency: 4,
            max_attempts: 10,
            max_batch: crate::kafka::DEFAULT_MAX_BATCH,
        },
        ops_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        grpc: ServerSettings::default(),
    })
}

/// A service running inside the test process; dropping it stops it too, so
/// a test that fails half-way leaves nothing running.
pub struct RunningService {
    ops_addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    stop: DropGuard,
    running: JoinHandle<anyhow::Result<()>>,
}

impl RunningService {
    /// Builds `S` with `config` (see [`service_config`]) and its own
    /// settings `own`, and runs it: [`App::build`], then
    /// [`App::run_until_stopped`] on a task of its own.
    pub async fn start<S: ServiceSpec>(
        config: ServiceConfig,
        own: S::Config,
    ) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let app = App::<S>::build(config, own, shutdown.clone()).await?;
        Ok(Self {
            ops_addr: app.ops_addr(),
            grpc_addr: app.grpc_addr(),
            stop: shutdown.drop_guard(),
            running: tokio::spawn(app.run_until_stopped()),
        })
    }

    /// Where its ops server (`/healthz`, `/readyz`, `/metrics`) listens.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// Where its gRPC API listens; an error for a service without one.
    pub fn grpc_addr(&self) -> anyhow::Result<SocketAddr> {
        self.grpc_addr.context("the service serves no gRPC API")
    }

    /// Stops it as SIGTERM would and waits until it has drained; fails if
    /// it had failed or does not stop within [`STOP_TIMEOUT`].
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.disarm().cancel();
        tokio::time::timeout(STOP_TIMEOUT, self.running)
            .await
            .context("the service did not stop")?
            .context("the service's task")?
    }
}

/// The other services, as the service under test meets them on the broker:
/// publishes events as they would, and reads what the service publishes.
pub struct TestBus {
    settings: KafkaSettings,
    producer: FutureProducer,
    consumer: StreamConsumer<GroupMembership>,
}

impl TestBus {
    /// Connects to the broker of `settings` (a service's, see
    /// [`service_config`]) and reads `watched` from their first event, in a
    /// consumer group of its own. Creates the topics if they are missing, so
    /// that the subscription sees them at once.
    pub async fn connect(settings: &KafkaSettings, watched: &[&str]) -> anyhow::Result<Self> {
        settings.ensure_topics(watched).await?;
        let reader = KafkaSettings {
            group_id: format!("{}test-bus-{}", settings.topic_prefix, uuid::Uuid::new_v4()),
            ..settings.clone()
        };
        let consumer = reader.consumer(GroupMembership::default())?;
        let topics: Vec<String> = watched.iter().map(|topic| settings.topic(topic)).collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .with_context(|| format!("subscribing to {topics:?}"))?;
        Ok(Self {
            producer: settings.producer()?,
            settings: settings.clone(),
            consumer,
        })
    }

    /// Publishes `event` about `order_id` as the service `producer` would:
    /// sealed in a fresh envelope, keyed by the order, on the event's topic.
    pub async fn publish(
        &self,
        producer: &str,
        order_id: OrderId,
        event: &Event,
    ) -> anyhow::Result<()> {
        let payload = envelope::seal(producer, order_id, event).encode_to_vec();
        let key = order_id.to_string();
        let topic = self.settings.topic(event.topic());
        self.producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                PUBLISH_TIMEOUT,
            )
            .await
            .map_err(|(error, _)| error)
            .with_context(|| format!("publishing {} to {topic}", event.type_name()))?;
        Ok(())
    }

    /// The next event about `order_id` on the watched topics, passing over
    /// other orders' events; fails if none comes `within`.
    pub async fn next_event(&self, order_id: OrderId, within: Duration) -> anyhow::Result<Event> {
        let next = async {
            loop {
                let message = self
                    .consumer
                    .recv()
                    .await
                    .context("reading the watched topics")?;
                let Some(payload) = message.payload() else {
                    continue;
                };
                let incoming = envelope::open(payload)?;
                if incoming.order_id == order_id {
                    return anyhow::Ok(incoming.event);
                }
            }
        };
        tokio::time::timeout(within, next)
            .await
            .with_context(|| format!("no event about order {order_id} within {within:?}"))?
    }
}

/// An OrderPlaced as the order service publishes it: `quantity` units of
/// `sku` at `unit_price` each, for customer `customer-1`, paid with
/// `tok_visa` (which the PSP simulator approves) and bound for `country`.
pub fn order_placed(
    sku: &str,
    quantity: i64,
    unit_price: common::Money,
    country: &str,
) -> events::OrderPlaced {
    let total = common::Money {
        amount_minor: quantity * unit_price.amount_minor,
        ..unit_price.clone()
    };
    events::OrderPlaced {
        customer_id: "customer-1".to_owned(),
        lines: vec![events::OrderLine {
            sku: sku.to_owned(),
            quantity,
            unit_price: Some(unit_price),
        }],
        total: Some(total),
        card_token: "tok_visa".to_owned(),
        shipping_address: Some(common::Address {
            name: "Ada Lovelace".to_owned(),
            line1: "1 Analytical Row".to_owned(),
            line2: String::new(),
            city: "Somewhere".to_owned(),
            postal_code: "10115".to_owned(),
            country: country.to_owned(),
        }),
    }
}
