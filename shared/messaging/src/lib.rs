//! Exactly-once effects over at-least-once delivery: the event envelope, the
//! transactional outbox and its relay, the inbox, and the consumer loop.
#![forbid(unsafe_code)]

pub mod consumer;
pub mod envelope;
pub mod inbox;
pub mod kafka;
pub mod outbox;
pub mod service;

pub use consumer::{ConsumerLoop, HandleError, Handler};
pub use envelope::Incoming;
pub use kafka::{Broker, KafkaSettings};
pub use outbox::OutboxRelay;
pub use service::ServiceConfig;

/// Creates the `outbox` and `inbox` tables; run it with the service's own
/// migrator (see `shipshape_runtime::database::migrate`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Where messages go that cannot be decoded or keep failing.
pub const DEAD_LETTER_TOPIC: &str = "dead-letters";
