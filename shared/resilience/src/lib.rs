//! The resilience stack every outbound call goes through, as tower layers:
//! a [`timeout`] per attempt, [`retry`] with full-jitter backoff and a
//! retry budget, a [`breaker`] over a sliding window of outcomes, and a
//! [`bulkhead`] limiting concurrent calls per downstream. Each pattern is
//! one module with its own layer and tests; [`Downstream`] composes them
//! once, with state shared by every method of one dependency.
//!
//! # Order
//!
//! `Retry → CircuitBreaker → Timeout → Bulkhead → inner`, outermost first.
//! This differs from the order listed in DESIGN.md on purpose:
//!
//! - The timeout sits *inside* the breaker, so the breaker sees a timeout as
//!   a failure. Outside it, a timed-out call would just be dropped, and a
//!   downstream that hangs instead of failing would never trip it.
//! - The timeout sits *inside* the retry, so each attempt gets its own full
//!   timeout rather than the first slow attempt eating the retries' time.
//! - The retry sits *outside* the breaker, so every attempt is judged and
//!   counted by it, and once it opens the remaining retries are refused
//!   instead of piling onto a failing downstream.
//! - The bulkhead is innermost, so only calls that passed the breaker take a
//!   permit, and the wait for one counts towards the attempt's timeout.
//!
//! # Idempotency
//!
//! Whether calls may be retried is decided per layer
//! ([`Downstream::layer`] with an [`Idempotency`]), not by a trait on the
//! request: requests are generated protobuf messages, which a service
//! cannot implement this crate's trait for (neither is its own), and one
//! method is either safe to repeat or not. Services wrap each method of a
//! client separately, all sharing the downstream's state:
//!
//! ```
//! use shipshape_resilience::{Downstream, Idempotency, ResilienceConfig};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let inventory = Downstream::new("inventory", ResilienceConfig::from_env("INVENTORY")?);
//! let get_price = ServiceBuilder::new()
//!     .layer(inventory.layer(Idempotency::Idempotent))
//!     .service_fn(|sku: String| async move {
//!         // With a generated client (cloned per call, it is a cheap handle):
//!         // client.get_price(request).await.map(tonic::Response::into_inner)
//!         Ok::<_, tonic::Status>(sku.len() as u64 * 100)
//!     });
//!
//! let price = get_price
//!     .clone()
//!     .oneshot("SKU-1".to_owned())
//!     .await
//!     // The inner status unchanged, or UNAVAILABLE / DEADLINE_EXCEEDED
//!     // with `x-error-code` metadata for the stack's own refusals.
//!     .map_err(tonic::Status::from)?;
//! # let _ = price;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod breaker;
pub mod bulkhead;
mod config;
mod downstream;
mod error;
pub mod retry;
pub mod telemetry;
pub mod timeout;

#[cfg(test)]
mod testing;

pub use breaker::{BreakerConfig, BreakerState};
pub use bulkhead::BulkheadConfig;
pub use config::ResilienceConfig;
pub use downstream::{Downstream, ResilienceLayer, Resilient};
pub use error::{Classify, FailureClass, ResilienceError};
pub use retry::{Idempotency, RetryConfig};
pub use telemetry::describe;
pub use timeout::TimeoutConfig;
