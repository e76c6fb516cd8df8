//! Setting the broker up for one deployment, as a super user: each
//! service's login, the topics, and the grants that let each service do
//! its part and nothing more. Running it again changes nothing but the
//! passwords given (a rotation).

use std::time::Duration;

use anyhow::Context;
use shipshape_proto::{DEAD_LETTER_TOPIC, ROLES, Role};
use shipshape_runtime::Backoff;

use crate::admin::Admin;
use crate::connection::{Connection, Login, Password};
use crate::grants::{self, Grant};
use crate::topics::{self, TopicLayout};

/// Between attempts while the broker is still starting.
const STARTING_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
/// About a minute of attempts.
const STARTING_ATTEMPTS: u32 = 40;

/// One deployment on the broker: its topic prefix and how its topics are
/// laid out.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub prefix: String,
    pub layout: TopicLayout,
}

impl Deployment {
    /// Every topic of the deployment: each service's and the dead letters.
    pub fn topics(&self) -> Vec<String> {
        ROLES
            .iter()
            .map(|role| role.publishes)
            .chain([DEAD_LETTER_TOPIC])
            .map(|topic| format!("{}{topic}", self.prefix))
            .collect()
    }

    /// The login of `role`'s service with `password`.
    pub fn login(&self, role: &Role, password: Password) -> Login {
        Login::scram(grants::username(&self.prefix, role.service), password)
    }

    /// What every service may do.
    pub fn grants(&self) -> Vec<Grant> {
        ROLES
            .iter()
            .flat_map(|role| grants::grants(role, &self.prefix))
            .collect()
    }

    /// Creates or updates the services' `logins`, creates the topics that
    /// are missing and grants each service its access, logged in as
    /// `admin`, a super user. Waits for a broker that is still starting.
    pub async fn apply(&self, admin: &Connection, logins: &[Login]) -> anyhow::Result<()> {
        let client = Admin::connect(admin)?;
        for attempt in 1.. {
            match client.upsert_users(logins).await {
                Ok(()) => break,
                Err(error) if attempt < STARTING_ATTEMPTS => {
                    tracing::warn!(error = %format!("{error:#}"), attempt, "broker not ready for its users");
                    tokio::time::sleep(STARTING_BACKOFF.delay(attempt)).await;
                }
                Err(error) => return Err(error),
            }
        }
        topics::ensure(admin, &self.topics(), self.layout).await?;
        client
            .create_acls(&self.grants())
            .await
            .context("granting the services their access")
    }
}
