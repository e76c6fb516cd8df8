//! A fault-injection TCP proxy to put between any two parts of Shipshape: a
//! service and its database, a service and the broker, the gateway and a
//! service. Every resilience pattern the project claims (timeouts, retries,
//! breakers, reconnecting pools and consumers) is only proven when a test
//! makes the network misbehave underneath it, and this is how it does.
//!
//! The proxy forwards bytes both ways for each accepted connection until a
//! test, holding a cheap [`FaultControl`], switches on one [`Fault`] at a
//! time. Each fault stands for a failure real networks produce and catches
//! a different missing safeguard:
//!
//! - [`Fault::Latency`] is a longer wire: a dependency in another zone or
//!   under load. It checks that timeouts and latency budgets hold and that
//!   bulkheads fill up instead of the caller. The delay applies to each chunk
//!   from the moment it was read, so pipelined traffic (Kafka fetches,
//!   Postgres pipelines, gRPC streams) pays it once, not once per chunk.
//! - [`Fault::Drop`] is a peer that leaves cleanly (a restart, a load
//!   balancer closing idle connections): every connection gets a FIN and
//!   new ones are closed at once. It checks that pools evict dead connections
//!   and that clients reconnect.
//! - [`Fault::Reset`] is a crash or a firewall killing connections: every
//!   connection gets an RST. It checks that a reset mid-request is treated
//!   as a failure, never mistaken for a clean end of stream.
//! - [`Fault::Blackhole`] is the worst case for timeouts: a TCP connect
//!   succeeds, then nothing, and no error ever arrives. Only a timeout ends
//!   the wait, so any call, pool acquire or consumer poll without one hangs
//!   here, which is exactly what this fault is for finding.
//!
//! The proxy has no authentication and adds faults on purpose, so tests bind
//! it only to loopback, on port 0 (`127.0.0.1:0`): nothing off the machine
//! can reach it and parallel tests never share a port.
//!
//! ```no_run
//! # async fn example(postgres: std::net::SocketAddr) -> std::io::Result<()> {
//! use std::time::Duration;
//! use shipshape_faultproxy::{Fault, FaultProxy};
//!
//! let proxy = FaultProxy::start(([127, 0, 0, 1], 0).into(), postgres).await?;
//! let url = format!("postgres://app@{}/orders", proxy.local_addr());
//! // ... start the service under test against `url` ...
//!
//! let control = proxy.control();
//! control.set(Fault::Latency(Duration::from_millis(200)));
//! control.set(Fault::Blackhole);
//! control.clear();
//! assert!(control.stats().accepted > 0);
//!
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod connection;
mod control;
mod fault;
mod proxy;

pub use control::{FaultControl, Stats};
pub use fault::Fault;
pub use proxy::{FaultProxy, Upstream};
