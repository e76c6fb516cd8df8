//! Who reaches the broker and what each may do there. Every service logs
//! in as a principal of its own ([`Connection`]); the setup
//! ([`Deployment::apply`], run by the local stack, the tests, Compose and
//! the Helm chart) creates those principals, the topics and the ACLs that
//! let each service write only the topic it publishes on and read only
//! what it consumes ([`grants`]).
//!
//! rust-rdkafka wraps no ACL or SCRAM administration, so [`admin`] calls
//! librdkafka's C API for them: the only unsafe code of the project.

pub mod admin;
mod connection;
pub mod grants;
mod setup;
pub mod topics;

pub use connection::{Connection, Login, Mechanism, Password, Protocol};
pub use setup::Deployment;
pub use topics::TopicLayout;
