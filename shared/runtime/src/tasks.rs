//! Runs a process's long-lived tasks (servers, consumer, relay) together.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

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

/// Runs `tick` every `interval`, the first time one interval from now,
/// until `shutdown`: the loop of a periodic sweep. A tick handles its own
/// errors (a sweep logs and tries again next time), so the loop never ends
/// on one.
pub async fn every<Tick, Ticked>(
    interval: Duration,
    shutdown: CancellationToken,
    mut tick: Tick,
) -> anyhow::Result<()>
where
    Tick: FnMut() -> Ticked,
    Ticked: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        tick().await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_periodic_task_ticks_once_an_interval_until_shutdown() {
        let ticks = Cell::new(0);
        let shutdown = CancellationToken::new();
        let interval = Duration::from_secs(1);
        let running = every(interval, shutdown.clone(), || async {
            ticks.set(ticks.get() + 1);
        });
        let stopping = async {
            tokio::time::sleep(interval * 3 + interval / 2).await;
            shutdown.cancel();
        };
        let (ran, ()) = tokio::join!(running, stopping);
        ran.expect("a cancelled loop ends with Ok");
        assert_eq!(ticks.get(), 3, "not one tick before the first interval");
    }
}
