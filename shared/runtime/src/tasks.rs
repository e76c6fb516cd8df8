//! Runs a process's long-lived tasks (servers, consumer, relay) together.

use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Task = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A set of named tasks that live as long as the process.
#[derive(Default)]
pub struct Tasks {
    tasks: Vec<(&'static str, Task)>,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(
        mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> Self {
        self.tasks.push((name, Box::pin(task)));
        self
    }

    /// Runs every task until all have finished. The first one to fail, or to
    /// end before shutdown was asked for, cancels `shutdown` so the others
    /// drain too; its error is returned.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut set = JoinSet::new();
        for (name, task) in self.tasks {
            set.spawn(async move { (name, task.await) });
        }
        let mut first_error = None;
        while let Some(joined) = set.join_next().await {
            let (name, outcome) = match joined {
                Ok(done) => done,
                Err(e) => ("task", Err(anyhow::anyhow!("panicked: {e}"))),
            };
            let outcome = match outcome {
                Ok(()) if !shutdown.is_cancelled() => Err(anyhow::anyhow!("ended unexpectedly")),
                other => other,
            };
            if let Err(error) = outcome {
                tracing::error!(task = name, %error, "task failed; shutting down");
                shutdown.cancel();
                first_error.get_or_insert(error.context(name));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
