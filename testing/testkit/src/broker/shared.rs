//! The broker one test talks to: the run's shared broker when `cargo xtask
//! test` started one, else a broker of the test's own.

use std::path::Path;

use super::{Broker, Installation};

/// Environment variable with the address (`127.0.0.1:<port>`) of the
/// broker `cargo xtask test` starts for the whole run. Tests then share it,
/// each under a topic prefix of its own, rather than start a JVM each; a
/// test that kills the broker or cuts it off still starts its own.
pub const SHARED_BROKER_VAR: &str = "SHIPSHAPE_SHARED_BROKER";

/// The address of the run's shared broker ([`SHARED_BROKER_VAR`]), if the
/// run has one.
pub fn shared_broker() -> Option<String> {
    std::env::var(SHARED_BROKER_VAR)
        .ok()
        .filter(|address| !address.is_empty())
}

/// A fresh topic prefix for one test on a shared broker: `t`, 8 random hex
/// digits and a dot.
pub fn test_topic_prefix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}.", &id[..8])
}

/// The broker one test talks to: the run's shared broker when there is one,
/// or else a broker started for this test alone.
#[derive(Debug)]
pub enum TestBroker {
    /// The run's broker, at this address; the test keeps to its own topics.
    Shared(String),
    /// A broker of the test's own, stopped with it.
    Own(Box<Broker>),
}

impl TestBroker {
    /// The shared broker, or a broker of its own with its data and log in
    /// `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        if let Some(address) = shared_broker() {
            return Ok(Self::Shared(address));
        }
        let installation = Installation::install()?;
        Ok(Self::Own(Box::new(
            Broker::start_in(&installation, dir).await?,
        )))
    }

    /// `127.0.0.1:<port>`, the value for `KAFKA_BROKERS`.
    pub fn address(&self) -> String {
        match self {
            Self::Shared(address) => address.clone(),
            Self::Own(broker) => broker.address(),
        }
    }

    /// Stops the test's own broker; the shared one runs on.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Shared(_) => Ok(()),
            Self::Own(broker) => broker.stop().await,
        }
    }
}
