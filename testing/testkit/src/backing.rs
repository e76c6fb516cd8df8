//! What services need to run inside a test process
//! (`services/<name>/tests/`): a fresh database each on the real Postgres,
//! owned by the service's role as in every stack, and the real broker, with
//! a topic prefix no other test uses.

use std::path::PathBuf;

use anyhow::Context as _;
use shipshape_kafka::Connection;

use crate::broker::{TestBroker, shared_broker, test_topic_prefix};
use crate::postgres;
use crate::stack::{Service, default_bin_dir, drop_databases_blocking, test_database_prefix};

/// The databases and the broker of one test. Call [`BackingServices::stop`]
/// at the end; if the test panics first, dropping it removes the databases
/// and stops a broker of its own all the same.
pub struct BackingServices {
    admin_url: String,
    /// Each service's database name and `DATABASE_URL`.
    databases: Vec<(Service, String, String)>,
    broker: Option<TestBroker>,
    topic_prefix: String,
}

impl BackingServices {
    /// Creates a database for each of `services` (each one that owns a
    /// database), and finds the run's shared broker or starts one for this
    /// test, with its data and log in `<bin_dir>/test-logs/<prefix>/`
    /// (kept, like a stack's logs, for reading after a failure).
    pub async fn start(services: &[Service]) -> anyhow::Result<Self> {
        let prefix = test_database_prefix();
        let mut backing = Self {
            admin_url: postgres::ensure_server().await?,
            databases: Vec::new(),
            broker: None,
            topic_prefix: test_topic_prefix(),
        };
        for &service in services {
            let role = service
                .role()
                .with_context(|| format!("{service} owns no database"))?;
            let database = format!("{prefix}_{}", service.name());
            let url =
                postgres::create_service_database(&backing.admin_url, &database, &role).await?;
            backing.databases.push((service, database, url));
        }
        let broker_dir = if shared_broker().is_some() {
            PathBuf::new()
        } else {
            let dir = default_bin_dir()?.join("test-logs").join(&prefix);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir
        };
        backing.broker = Some(TestBroker::start(&broker_dir).await?);
        Ok(backing)
    }

    /// Starts the databases of `services` and the broker, runs `test` on
    /// them and stops them again. A failure of `test` comes first, with a
    /// failed stop attached, so a cleanup error never hides why the test
    /// failed: a test is one line around what it checks.
    pub async fn run(
        services: &[Service],
        test: impl AsyncFnOnce(&BackingServices) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let backing = Self::start(services).await?;
        let outcome = test(&backing).await;
        backing.stop_after(outcome).await
    }

    /// The `DATABASE_URL` of the service called `name` (`order`, …), with
    /// its own role.
    pub fn database_url(&self, name: &str) -> anyhow::Result<&str> {
        self.databases
            .iter()
            .find(|(owner, ..)| owner.name() == name)
            .map(|(.., url)| url.as_str())
            .with_context(|| format!("no database was started for {name}"))
    }

    /// A login to the broker as its super user: a service under test in
    /// this process connects with it and creates its own topics.
    pub fn kafka(&self) -> anyhow::Result<Connection> {
        self.broker
            .as_ref()
            .map(TestBroker::admin)
            .context("the broker was not started")
    }

    /// Put before every topic and consumer group of this test, the
    /// services' `KAFKA_TOPIC_PREFIX`.
    pub fn topic_prefix(&self) -> &str {
        &self.topic_prefix
    }

    /// Drops the databases (ending any session still open on them) and
    /// stops the test's own broker; a shared one runs on.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let names: Vec<String> = std::mem::take(&mut self.databases)
            .into_iter()
            .map(|(_, name, _)| name)
            .collect();
        let dropped = postgres::drop_databases(&self.admin_url, &names).await;
        let stopped = match self.broker.take() {
            Some(broker) => broker.stop().await,
            None => Ok(()),
        };
        dropped.and(stopped)
    }
}

impl BackingServices {
    /// Stops (see [`BackingServices::stop`]), then answers the test's own
    /// `outcome`: its failure comes first, with a failed stop attached, so
    /// a cleanup error never hides why the test failed.
    async fn stop_after(self, outcome: anyhow::Result<()>) -> anyhow::Result<()> {
        let stopped = self.stop().await;
        match (outcome, stopped) {
            (Err(failure), Err(stop)) => Err(failure.context(format!(
                "(stopping the backing services failed too: {stop:#})"
            ))),
            (Err(failure), Ok(())) => Err(failure),
            (Ok(()), stopped) => stopped,
        }
    }
}

impl Drop for BackingServices {
    fn drop(&mut self) {
        // Only after a panic or an early return: `stop` took them.
        if !self.databases.is_empty() {
            let names = self.databases.drain(..).map(|(_, name, _)| name).collect();
            drop_databases_blocking(&self.admin_url, names);
        }
    }
}

impl std::fmt::Debug for BackingServices {
    /// Names, never the URLs: they carry the roles' passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let databases: Vec<&str> = self
            .databases
            .iter()
            .map(|(_, name, _)| name.as_str())
            .collect();
        f.debug_struct("BackingServices")
            .field("databases", &databases)
            .field("broker", &self.broker)
            .field("topic_prefix", &self.topic_prefix)
            .finish()
    }
}
