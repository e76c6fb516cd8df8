//! The checker: connects to every source once and checks them all on demand.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shipshape_kafka::Connection;

use crate::broker::{self, Broker, DeadLetter, SourceMessage};
use crate::ledger::Ledger;
use crate::report::{Report, Violation};
use crate::rules;
use crate::snapshot::Databases;
use crate::{Error, Result};

/// Where the system's state is.
#[derive(Clone, Debug)]
pub struct Sources {
    pub order_db: String,
    pub inventory_db: String,
    pub payment_db: String,
    pub shipping_db: String,
    /// The PSP simulator's base URL; without it the payment table stands in
    /// for the ledger and a double charge cannot be seen.
    pub psp_url: Option<String>,
    /// The broker and the login to read it with (one allowed to describe
    /// every service's group and read the dead-letter topic); without it
    /// consumer lag and dead letters are not checked.
    pub broker: Option<Connection>,
    /// What the services put before every topic and group name
    /// (`KAFKA_TOPIC_PREFIX`); empty unless they share a broker.
    pub topic_prefix: String,
}

/// A dead letter someone expects (a test's poison message, say).
type Explanation = Box<dyn Fn(&DeadLetter) -> bool + Send + Sync>;

pub struct Checker {
    databases: Databases,
    http: reqwest::Client,
    psp_url: Option<String>,
    broker: Option<Arc<Broker>>,
    /// Source messages whose dead letters are expected; added to while the
    /// checker is shared, hence the lock.
    explained: Mutex<HashSet<SourceMessage>>,
    explanations: Vec<Explanation>,
}

impl Checker {
    /// Connects to the four databases (read only). The PSP and the broker
    /// are only contacted by [`Checker::check`].
    pub async fn connect(sources: Sources) -> Result<Self> {
        let databases = Databases::connect(
            &sources.order_db,
            &sources.inventory_db,
            &sources.payment_db,
            &sources.shipping_db,
        )
        .await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| Error::Ledger {
                url: sources.psp_url.clone().unwrap_or_default(),
                source,
            })?;
        Ok(Self {
            databases,
            http,
            psp_url: sources.psp_url,
            broker: sources
                .broker
                .map(|b| Arc::new(Broker::new(b, sources.topic_prefix))),
            explained: Mutex::new(HashSet::new()),
            explanations: Vec::new(),
        })
    }

    /// Dead letters of `source` are expected: they are not violations.
    pub fn explain(&self, source: SourceMessage) {
        // A panic elsewhere cannot leave a set of offsets half-updated.
        self.explained
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(source);
    }

    /// Dead letters for which `expected` holds are not violations.
    pub fn explain_if(
        mut self,
        expected: impl Fn(&DeadLetter) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.explanations.push(Box::new(expected));
        self
    }

    /// Every invariant, over every source given.
    pub async fn check(&self) -> Result<Report> {
        let snapshot = self.databases.snapshot().await?;
        let mut skipped = Vec::new();
        let ledger = match &self.psp_url {
            Some(url) => Some(Ledger::fetch(&self.http, url).await?),
            None => {
                skipped.push(
                    "the PSP ledger (no PSP URL): double captures; money judged by the \
                     payment table"
                        .to_owned(),
                );
                None
            }
        };
        let mut violations = rules::violations(&snapshot, ledger.as_ref());
        match &self.broker {
            Some(broker) => {
                violations.extend(broker::lag(&broker.positions().await?));
                violations.extend(self.unexplained(&broker.dead_letters().await?));
            }
            None => skipped.push("consumer lag and dead letters (no brokers)".to_owned()),
        }
        Ok(Report {
            orders: rules::order_counts(&snapshot),
            violations,
            skipped,
        })
    }

    /// Only what says the system is not quiet yet: consumer lag (with a
    /// broker), outbox rows, orders not yet terminal and payments waiting
    /// for a PSP call. Empty once all work has ended.
    pub async fn check_quiet(&self) -> Result<Vec<Violation>> {
        let snapshot = self.databases.snapshot().await?;
        let mut found = rules::outbox(&snapshot.outbox);
        found.extend(rules::in_flight(&snapshot));
        if let Some(broker) = &self.broker {
            found.extend(broker::lag(&broker.positions().await?));
        }
        Ok(found)
    }

    /// The PSP's ledger; `None` without a PSP URL.
    pub async fn ledger(&self) -> Result<Option<Ledger>> {
        match &self.psp_url {
            Some(url) => Ok(Some(Ledger::fetch(&self.http, url).await?)),
            None => Ok(None),
        }
    }

    /// Every message on the dead-letter topic; none without a broker.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        match &self.broker {
            Some(broker) => broker.dead_letters().await,
            None => Ok(Vec::new()),
        }
    }

    fn unexplained(&self, letters: &[DeadLetter]) -> Vec<Violation> {
        let explained = self
            .explained
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        broker::unexplained(letters, &explained, &|letter| {
            self.explanations.iter().any(|expected| expected(letter))
        })
    }
}
