//! Stopping a stack: gracefully and in order ([`Stack::stop`]), or at once
//! when it is dropped.

use anyhow::anyhow;

use super::databases::drop_databases_blocking;
use super::{Replica, STOP_GRACE, Service, Stack};
use crate::postgres;
use crate::process::{Process, Stopped};

impl Stack {
    /// Stops everything gracefully: SIGTERM to the gateway first (no new
    /// requests), then the saga services together, then the PSP simulator,
    /// then the broker; each has 15 s before it is killed. Then drops the
    /// databases unless `keep_databases`.
    ///
    /// Everything is stopped even when something fails; the error lists
    /// every process that had to be killed or did not exit successfully
    /// (which includes one that crashed earlier).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        let groups: [&[Service]; 3] = [
            &[Service::Gateway],
            &[
                Service::Order,
                Service::Inventory,
                Service::Payment,
                Service::Shipping,
            ],
            &[Service::Psp],
        ];
        for group in groups {
            let mut stopping = Vec::new();
            let replicas: Vec<Replica> = self
                .processes
                .keys()
                .filter(|replica| group.contains(&replica.service))
                .copied()
                .collect();
            for replica in replicas {
                if let Some(mut process) = self.processes.remove(&replica) {
                    match process.request_stop() {
                        Ok(()) => stopping.push(process),
                        Err(e) => problems.push(format!("{e:#}")),
                    }
                }
            }
            for mut process in stopping {
                match process.finish_stop(STOP_GRACE).await {
                    Ok(stopped) => problems.extend(describe_stop(&process, stopped)),
                    Err(e) => problems.push(format!("{e:#}")),
                }
            }
        }
        if let Some(broker) = self.broker.take()
            && let Err(e) = broker.stop().await
        {
            problems.push(format!("{e:#}"));
        }
        if !self.options.keep_databases {
            let names = std::mem::take(&mut self.databases);
            if let Err(e) = postgres::drop_databases(&self.admin_url, &names).await {
                problems.push(format!("{e:#}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(
                "the stack did not stop cleanly:\n- {}",
                problems.join("\n- ")
            ))
        }
    }
}

/// A problem worth reporting about how a process stopped, if any.
fn describe_stop(process: &Process, stopped: Stopped) -> Option<String> {
    match stopped {
        Stopped::Exited(status) if status.success() => None,
        Stopped::Exited(status) => Some(format!(
            "{} exited with {status}; see {}",
            process.label(),
            process.log_path().display()
        )),
        Stopped::Killed(_) => Some(format!(
            "{} did not exit within {STOP_GRACE:?} of SIGTERM and was killed; see {}",
            process.label(),
            process.log_path().display()
        )),
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Processes first (dropping one kills and reaps it), the broker
        // last, then the databases nobody uses any more.
        self.processes.clear();
        self.broker = None;
        if !self.options.keep_databases && !self.databases.is_empty() {
            drop_databases_blocking(&self.admin_url, std::mem::take(&mut self.databases));
        }
    }
}
