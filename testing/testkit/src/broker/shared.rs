//! The broker one test talks to: the run's shared broker when `cargo xtask
//! test` started one, else a broker of the test's own.

use std::path::Path;

use shipshape_kafka::{Connection, Login, Password};

use super::config::ADMIN_USER;
use super::{Broker, Installation};

/// Environment variable with the address (`127.0.0.1:<port>`) of the
/// broker `cargo xtask test` starts for the whole run. Tests then share it,
/// each under a topic prefix of its own, rather than start a JVM each; a
/// test that kills the broker or cuts it off still starts its own.
pub const SHARED_BROKER_VAR: &str = "SHIPSHAPE_SHARED_BROKER";

/// Environment variable with the super user's password of the broker in
/// [`SHARED_BROKER_VAR`].
pub const SHARED_BROKER_PASSWORD_VAR: &str = "SHIPSHAPE_SHARED_BROKER_PASSWORD";

/// A super user's login to the run's shared broker ([`SHARED_BROKER_VAR`],
/// [`SHARED_BROKER_PASSWORD_VAR`]), if the run has one.
pub fn shared_broker() -> Option<Connection> {
    let address = std::env::var(SHARED_BROKER_VAR)
        .ok()
        .filter(|address| !address.is_empty())?;
    let password = std::env::var(SHARED_BROKER_PASSWORD_VAR).unwrap_or_default();
    Some(Connection::sasl_plaintext(
        address,
        Login::scram(ADMIN_USER, Password::new(password)),
    ))
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
    /// The run's broker, logged in as its super user; the test keeps to its
    /// own topics.
    Shared(Connection),
    /// A broker of the test's own, stopped with it.
    Own(Box<Broker>),
}

impl TestBroker {
    /// The shared broker, or a broker of its own with its data and log in
    /// `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        if let Some(admin) = shared_broker() {
            return Ok(Self::Shared(admin));
        }
        let installation = Installation::install()?;
        Ok(Self::Own(Box::new(
            Broker::start_in(&installation, dir).await?,
        )))
    }

    /// A login to it as the super user.
    pub fn admin(&self) -> Connection {
        match self {
            Self::Shared(admin) => admin.clone(),
            Self::Own(broker) => broker.admin(),
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
