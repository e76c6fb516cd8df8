//! What a test does to a running stack: crash, stop and restart its
//! processes and its broker, scale a service out, and inject faults.

use std::process::ExitStatus;

use anyhow::{Context, anyhow, bail};

use shipshape_faultproxy::{FaultControl, FaultProxy};
use shipshape_kafka::{Login, Password};

use super::{Link, Replica, STOP_GRACE, Service, Stack};
use crate::broker::{Broker, SHARED_BROKER_VAR};
use crate::postgres;
use crate::process::Stopped;

#[cfg(doc)]
use super::StackOptions;

impl Stack {
    /// The fault control of a proxied link; fails when the stack was not
    /// started with that link proxied ([`StackOptions::with_proxy`]).
    pub fn fault(&self, link: Link) -> anyhow::Result<FaultControl> {
        self.proxies
            .get(&link)
            .map(FaultProxy::control)
            .ok_or_else(|| anyhow!("{link:?} is not proxied; start the stack with_proxy({link:?})"))
    }

    /// The processes that have exited (crashed, or were killed or stopped),
    /// with their exit status.
    pub fn exited(&mut self) -> anyhow::Result<Vec<(Replica, ExitStatus)>> {
        let mut exited = Vec::new();
        for (&replica, process) in &mut self.processes {
            if let Some(status) = process.try_status()? {
                exited.push((replica, status));
            }
        }
        Ok(exited)
    }

    /// Kills a replica with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self, replica: impl Into<Replica>) -> anyhow::Result<()> {
        self.process_mut(replica)?.kill().map(drop)
    }

    /// Stops `service` with SIGTERM and waits up to 15 s for it to exit.
    /// Returns its exit status (success for a graceful shutdown); fails if
    /// it had to be killed.
    pub async fn terminate(&mut self, replica: impl Into<Replica>) -> anyhow::Result<ExitStatus> {
        let replica = replica.into();
        match self.process_mut(replica)?.terminate(STOP_GRACE).await? {
            Stopped::Exited(status) => Ok(status),
            Stopped::Killed(_) => bail!(
                "{replica} did not exit within {STOP_GRACE:?} of SIGTERM and was killed; \
                 see {}",
                self.log_path(replica).display()
            ),
        }
    }

    /// Ends every connection to `service`'s database (`pg_terminate_backend`),
    /// as a database restart or failover would; returns how many were
    /// ended. Fails for a service without a database.
    pub async fn terminate_database_connections(&self, service: Service) -> anyhow::Result<u64> {
        if !service.owns_database() {
            bail!("{service} has no database");
        }
        let name = format!("{}_{}", self.options.database_prefix, service.name());
        postgres::terminate_connections(&self.admin_url, &name).await
    }

    /// Kills the broker with SIGKILL, as a crash would. Only a broker of
    /// the stack's own ([`StackOptions::with_own_broker`]).
    pub fn kill_broker(&mut self) -> anyhow::Result<()> {
        self.own_broker()?.kill()?;
        self.broker = None;
        Ok(())
    }

    /// Freezes the stack's own broker with SIGSTOP: its connections stay
    /// open and nothing answers, as in a long garbage-collection pause.
    pub fn pause_broker(&mut self) -> anyhow::Result<()> {
        self.own_broker()?.pause()
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume_broker(&mut self) -> anyhow::Result<()> {
        self.own_broker()?.resume()
    }

    fn own_broker(&mut self) -> anyhow::Result<&mut Broker> {
        if self.installation.is_none() {
            bail!(
                "this stack uses the run's shared broker ({SHARED_BROKER_VAR}), which it may not \
                 kill, pause or restart: start it with StackOptions::with_own_broker"
            );
        }
        self.broker
            .as_mut()
            .ok_or_else(|| anyhow!("the broker is not running"))
    }

    /// Starts the broker again on the same ports and data, after
    /// [`Stack::kill_broker`] (or a crash: [`Stack::broker_exited`]).
    pub async fn start_broker(&mut self) -> anyhow::Result<()> {
        if self.broker.is_some() {
            bail!("the broker is already running");
        }
        self.broker = Some(self.spawn_broker().await?);
        Ok(())
    }

    /// Rotates `service`'s password on the broker, as an operator would:
    /// the setup gives its principal a new random one, which the service
    /// gets when it is next started ([`Stack::start_service`]). Connections
    /// already logged in stay so; every new login needs the new password.
    pub async fn rotate_broker_password(&mut self, service: Service) -> anyhow::Result<()> {
        let admin = self
            .broker_admin
            .clone()
            .ok_or_else(|| anyhow!("the stack's broker is not set up"))?;
        let login = self
            .broker_logins
            .get(&service)
            .ok_or_else(|| anyhow!("{service} has no login to the broker"))?;
        let rotated = Login {
            password: Password::random(),
            ..login.clone()
        };
        self.deployment()?
            .apply(&admin, std::slice::from_ref(&rotated))
            .await
            .with_context(|| format!("rotating {service}'s password on the broker"))?;
        self.broker_logins.insert(service, rotated);
        Ok(())
    }

    /// Starts `service` again (after [`Stack::kill`] or [`Stack::terminate`])
    /// with the same environment (its broker login as it is now, after
    /// [`Stack::rotate_broker_password`]) and waits until it is ready.
    pub async fn start_service(&mut self, replica: impl Into<Replica>) -> anyhow::Result<()> {
        let replica = replica.into();
        self.launch(replica)?;
        let timeout = self.options.ready_timeout;
        self.wait_ready(&[replica], timeout).await
    }

    /// Starts one more replica of `service` (scale out) and waits until it
    /// is ready; returns it. Fails at [`StackOptions::max_replicas`].
    pub async fn add_replica(&mut self, service: Service) -> anyhow::Result<Replica> {
        let replica = self.launch_replica(service)?;
        let timeout = self.options.ready_timeout;
        self.wait_ready(&[replica], timeout).await?;
        Ok(replica)
    }

    /// Starts one more replica of `service` without waiting for it to be
    /// ready; returns it. Fails at [`StackOptions::max_replicas`].
    pub fn launch_replica(&mut self, service: Service) -> anyhow::Result<Replica> {
        if !Service::REPLICATED.contains(&service) {
            bail!(
                "the stack runs one {service}; only order, inventory, payment and shipping scale"
            );
        }
        let next = self
            .processes
            .keys()
            .filter(|replica| replica.service == service)
            .map(|replica| replica.index + 1)
            .max()
            .unwrap_or(0);
        let replica = Replica::new(service, next);
        self.spawn(replica)?;
        Ok(replica)
    }

    /// Starts `service` again with the same environment without waiting for
    /// it to be ready: a supervisor's restart, which must not wait on a
    /// dependency that is down ([`Stack::wait_ready`] waits).
    pub fn launch(&mut self, replica: impl Into<Replica>) -> anyhow::Result<()> {
        let replica = replica.into();
        if self.is_running(replica)? {
            bail!("{replica} is still running (pid {:?})", self.pid(replica));
        }
        self.spawn(replica)
    }

    /// Whether a replica's process is running.
    pub fn is_running(&mut self, replica: impl Into<Replica>) -> anyhow::Result<bool> {
        match self.processes.get_mut(&replica.into()) {
            Some(process) => Ok(process.try_status()?.is_none()),
            None => Ok(false),
        }
    }

    /// How the broker ended when it exited on its own (not through
    /// [`Stack::kill_broker`]); `None` while it runs or after a kill. The
    /// stack then treats it as down, so [`Stack::start_broker`] may start
    /// it again.
    pub fn broker_exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(broker) = self.broker.as_mut() else {
            return Ok(None);
        };
        let status = broker.exit_status()?;
        if status.is_some() {
            self.broker = None;
        }
        Ok(status)
    }

    /// Whether the broker is up: started and not killed through the stack
    /// (see [`Stack::broker_exited`] for one that died on its own).
    pub fn broker_running(&self) -> bool {
        self.broker.is_some() || self.installation.is_none()
    }
}
