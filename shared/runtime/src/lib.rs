//! The process plumbing every Shipshape binary shares, so a service's
//! `main.rs` only wires: config → telemetry → pool and migrations → broker →
//! servers → shutdown.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod database;
pub mod grpc;
pub mod grpc_balance;
pub mod grpc_tls;
pub mod metrics;
pub mod ops;
pub mod shutdown;
pub mod tasks;
pub mod wiring;

pub use backoff::Backoff;
pub use ops::Readiness;
pub use tasks::Tasks;
pub use tokio_util::sync::CancellationToken;
pub use wiring::Wiring;
