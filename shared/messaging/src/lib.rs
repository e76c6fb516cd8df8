//! Exactly-once effects over at-least-once delivery: the event envelope, the
//! transactional outbox and its relay, the inbox, and the consumer loop.
#![forbid(unsafe_code)]

pub mod consumer;
pub mod envelope;
pub mod inbox;
pub mod kafka;
pub mod outbox;
pub mod replay;
pub mod service;
#[cfg(feature = "testing")]
pub mod testing;

pub use consumer::{ConsumerLoop, Delivery, HandleError, Handler};
pub use envelope::Incoming;
pub use kafka::{Broker, GroupProtocol, KafkaSettings};
pub use outbox::OutboxRelay;
pub use service::{App, ServiceConfig, ServiceSpec};
pub use shipshape_proto::DEAD_LETTER_TOPIC;

/// Creates the `outbox` and `inbox` tables; run it with the service's own
/// migrator (see `shipshape_runtime::database::migrate`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const EVENTS_HANDLED: &str = "shipshape_events_handled_total";
pub const EVENTS_FAILED: &str = "shipshape_events_failed_total";
pub const EVENT_HANDLE_DURATION: &str = "shipshape_event_handle_duration_seconds";
pub const EVENT_BATCHES: &str = "shipshape_event_batches_total";
pub const EVENT_BATCH_FALLBACKS: &str = "shipshape_event_batch_fallbacks_total";
pub const DEAD_LETTERS: &str = "shipshape_dead_letters_total";
pub const PAUSED_PARTITIONS: &str = "shipshape_consumer_paused_partitions";
pub const CONSUMER_LAG: &str = "shipshape_consumer_lag";
pub const ASSIGNED_PARTITIONS: &str = "shipshape_consumer_assigned_partitions";
pub const OUTBOX_BACKLOG: &str = "shipshape_outbox_backlog";
pub const OUTBOX_PUBLISHED: &str = "shipshape_outbox_published_total";
pub const OUTBOX_PUBLISH_DURATION: &str = "shipshape_outbox_publish_duration_seconds";

/// Registers the help text of the consumer's and the relay's metrics.
pub fn describe() {
    metrics::describe_counter!(EVENTS_HANDLED, "Events handled, by event type");
    metrics::describe_counter!(
        EVENTS_FAILED,
        "Failed attempts to handle an event, by event type (each is retried or dead-lettered)"
    );
    metrics::describe_histogram!(
        EVENT_HANDLE_DURATION,
        metrics::Unit::Seconds,
        "Duration of one attempt to handle an event, by event type (an event handled in a batch gets its share of the batch's time)"
    );
    metrics::describe_counter!(
        EVENT_BATCHES,
        "Attempts to handle a batch of a partition's events at once (a lone event is a batch of one), failed ones and retries included; events handled per batch approximates the mean batch size"
    );
    metrics::describe_counter!(
        EVENT_BATCH_FALLBACKS,
        "Batches of several events that failed (a bad event, a lock waited on too long) and were handled again one event at a time"
    );
    metrics::describe_counter!(
        DEAD_LETTERS,
        "Messages sent to the dead-letter topic, by the topic they came from"
    );
    metrics::describe_gauge!(
        PAUSED_PARTITIONS,
        "Partitions whose fetching is paused while their worker catches up"
    );
    metrics::describe_gauge!(
        ASSIGNED_PARTITIONS,
        "Partitions the consumer group has assigned to this process; with several replicas they add up to the topics' partitions"
    );
    metrics::describe_gauge!(
        CONSUMER_LAG,
        "Messages of an assigned partition not yet handled and committed: high watermark minus committed offset"
    );
    metrics::describe_gauge!(
        OUTBOX_BACKLOG,
        "Outbox rows waiting to be published (every replica sharing the database reports the same rows)"
    );
    metrics::describe_counter!(OUTBOX_PUBLISHED, "Outbox rows published and acknowledged");
    metrics::describe_histogram!(
        OUTBOX_PUBLISH_DURATION,
        metrics::Unit::Seconds,
        "Time from handing an outbox batch to the producer until the broker acknowledged all of it"
    );
}
