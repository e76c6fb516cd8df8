//! The test kit: starts the real Shipshape stack as local processes, for
//! end-to-end tests and for `cargo xtask up`.
//!
//! Nothing here is a fake. Each test gets fresh Postgres databases on a real
//! server, a real Apache Kafka broker (from Maven Central, see [`broker`])
//! and the real service binaries, wired together through the same
//! environment variables the services read in containers:
//!
//! - [`postgres`] finds (or starts) a Postgres server and creates and drops
//!   per-service databases;
//! - [`broker`] installs and runs the broker;
//! - [`stack`] starts the six processes, waits until each one is ready and
//!   lets a test kill, stop and restart any of them;
//! - [`backing`] gives one service its database and the broker, for tests
//!   that run the service inside the test process;
//! - [`ports`] and [`http`] are the small helpers those need.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use shipshape_testkit::stack::{Service, Stack, StackOptions};
//!
//! let options = StackOptions::for_tests()?.with_env(Service::Order, "SAGA_DEADLINE_MS", "3000");
//! let mut stack = Stack::start(options).await?;
//! let products = format!("{}/api/v1/products", stack.gateway_url());
//! let (status, _body) = shipshape_testkit::http::get_json(&products).await?;
//! assert!(status.is_success());
//!
//! // A crash and a restart: the service comes back with the same settings.
//! stack.kill(Service::Payment)?;
//! stack.start_service(Service::Payment).await?;
//!
//! // Stops in order (gateway first, broker last) and drops the databases.
//! stack.stop().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod backing;
pub mod broker;
pub mod http;
pub mod otlp;
pub mod pki;
pub mod ports;
pub mod postgres;
mod process;
pub mod stack;

#[cfg(test)]
mod scratch;

pub use backing::BackingServices;
pub use broker::{Broker, BrokerConfig, Installation};
pub use ports::free_port;
pub use shipshape_faultproxy::Fault;
pub use stack::{BrokerChoice, Link, Ports, Replica, Service, Stack, StackOptions};
