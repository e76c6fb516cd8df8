//! The checkout saga's invariants, checked from outside once the system is
//! quiet: every service's database (read only), the payment provider's
//! ledger and the broker.
//!
//! - every order is terminal (CONFIRMED or CANCELLED);
//! - stock is conserved per product: received = available + held by
//!   RESERVED reservations + sold to COMMITTED ones;
//! - no payment is captured twice;
//! - a CONFIRMED order has its stock taken (the reservation COMMITTED, with
//!   the order's lines), one capture and one scheduled shipment;
//! - a CANCELLED order holds no stock, no shipment and no money;
//! - no event is left unprocessed: consumer lag 0, every outbox empty;
//! - the dead-letter topic is empty, or each entry is explained.
//!
//! ```no_run
//! # async fn example() -> Result<(), shipshape_invariants::Error> {
//! use shipshape_invariants::{Checker, Sources};
//! use shipshape_kafka::{Connection, Login, Password};
//!
//! let checker = Checker::connect(Sources {
//!     order_db: "postgres://shipshape_order@127.0.0.1/shipshape_order".into(),
//!     inventory_db: "postgres://shipshape_inventory@127.0.0.1/shipshape_inventory".into(),
//!     payment_db: "postgres://shipshape_payment@127.0.0.1/shipshape_payment".into(),
//!     shipping_db: "postgres://shipshape_shipping@127.0.0.1/shipshape_shipping".into(),
//!     psp_url: Some("http://127.0.0.1:8090".into()),
//!     broker: Some(Connection::sasl_plaintext(
//!         "127.0.0.1:9092",
//!         Login::scram("admin", Password::new("admin-secret")),
//!     )),
//!     topic_prefix: String::new(),
//! })
//! .await?;
//! let report = checker.check().await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod broker;
mod checker;
mod ledger;
mod report;
mod rules;
mod snapshot;

pub use broker::{DEAD_LETTER_TOPIC, DeadLetter, SUBSCRIPTIONS, SourceMessage};
pub use checker::{Checker, Sources};
pub use ledger::Ledger;
pub use report::{Report, Violation, ViolationKind};

/// Why a check could not be completed (as opposed to a violation found).
/// Library errors are boxed so that every `Result` here stays small.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}")]
    Database {
        context: String,
        #[source]
        source: Box<sqlx::Error>,
    },
    #[error("reading the payment provider's ledger at {url}")]
    Ledger {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("broker {brokers}: {context}")]
    Broker {
        brokers: String,
        context: String,
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// The broker answered, but not everything could be read in time.
    #[error("broker {brokers}: {context}")]
    Incomplete { brokers: String, context: String },
    #[error("a blocking broker task failed")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
