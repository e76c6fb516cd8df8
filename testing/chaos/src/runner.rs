//! A chaos run: a stack of its own, the checkout load from the load-test
//! tool, the schedule's faults applied on time while the load runs, then,
//! once the load and the faults are over, the wait until the system is
//! quiet and the invariant check.
//!
//! The runner also supervises, as Kubernetes would: a process that exits
//! when the schedule did not stop it is started again, and the restart is
//! reported (it is a finding, not a violation).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use shipshape_invariants::{Checker, Sources};
use shipshape_loadtest::client::Secret;
use shipshape_loadtest::run::{Load, RunOptions, RunReport};
use shipshape_loadtest::schedule::{Rate, Schedule as Arrivals};
use shipshape_loadtest::stats::round3;
use shipshape_testkit::stack::{Replica, Service, Stack, StackOptions};
use tokio::task::JoinHandle;

use crate::report::{AppliedFault, ChaosReport, Convergence, UnplannedRestart};
use crate::schedule::{Action, Edge, PspFaults, Schedule, Step};

/// How often the supervisor looks for processes that exited, and the
/// convergence wait asks whether the system is quiet.
const TICK: Duration = Duration::from_secs(1);

/// The shortest time between two restarts of one process by the
/// supervisor.
const RESTART_BACKOFF: Duration = Duration::from_secs(5);

/// How often the wait for quiet says what it is waiting for.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How long every process has, once the faults are over, to answer
/// `/readyz` again.
const READY_AFTER_FAULTS: Duration = Duration::from_secs(120);

/// Where a run's binaries are and where its report goes.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// The service binaries (`<target>/release` or `/debug`).
    pub bin_dir: PathBuf,
    /// `report.txt`, `report.json`, `load/` (the load test's report) and
    /// `logs/` (every process's log) go here.
    pub out_dir: PathBuf,
    /// Print each fault as it is applied.
    pub progress: bool,
}

/// Runs `schedule` on a fresh stack and reports. Fails only when the run
/// itself could not happen (the stack did not start, a database could not be
/// read); what the faults did to the system is in the report.
pub async fn run(schedule: &Schedule, options: &RunnerOptions) -> anyhow::Result<ChaosReport> {
    std::fs::create_dir_all(&options.out_dir)
        .with_context(|| format!("creating {}", options.out_dir.display()))?;
    let mut stack_options =
        StackOptions::scratch(&options.bin_dir, options.out_dir.join("logs"), "ch")?
            .with_client_limits_out_of_reach()
            .with_replicas(schedule.replicas, schedule.max_replicas());
    // The stack's processes share the runner's process group, so whatever
    // signals the whole group (a terminal's Ctrl-C) reaches them too; the
    // command drops the stack, its processes and databases on Ctrl-C or
    // SIGTERM. A SIGKILLed runner leaves its `shipshape_ch…` databases.
    stack_options.own_process_group = false;
    for link in schedule.links() {
        stack_options = stack_options.with_proxy(link);
    }
    let mut stack = Stack::start(stack_options)
        .await
        .context("starting the stack")?;
    let report = Run::new(schedule, options, &mut stack).drive().await;
    let stopped = stack.stop().await;
    let mut report = report?;
    if let Err(problem) = stopped {
        report.stop_problems = Some(format!("{problem:#}"));
    }
    report.write(&options.out_dir)?;
    Ok(report)
}

/// One run in progress.
struct Run<'a> {
    schedule: &'a Schedule,
    options: &'a RunnerOptions,
    stack: &'a mut Stack,
    http: reqwest::Client,
    /// When the load started: every time in the report counts from here.
    started: Instant,
    /// The processes the schedule has stopped; every other one should run.
    stopped: BTreeSet<Replica>,
    /// Processes whose planned restart failed, so the supervisor's report
    /// of them does not read as a crash.
    failed_restarts: BTreeSet<Replica>,
    /// When the supervisor last restarted each process.
    restarted_at: BTreeMap<Replica, Instant>,
    applied: Vec<AppliedFault>,
    unplanned: Vec<UnplannedRestart>,
    /// What failed while bringing the system back after the faults.
    recovery_errors: Vec<String>,
}

/// The load task, aborted if the run ends early (an error), so it does not
/// go on against a stack being torn down.
struct LoadTask(JoinHandle<anyhow::Result<RunReport>>);

impl Drop for LoadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<'a> Run<'a> {
    fn new(schedule: &'a Schedule, options: &'a RunnerOptions, stack: &'a mut Stack) -> Self {
        Self {
            schedule,
            options,
            stack,
            http: reqwest::Client::new(),
            started: Instant::now(),
            stopped: BTreeSet::new(),
            failed_restarts: BTreeSet::new(),
            restarted_at: BTreeMap::new(),
            applied: Vec::new(),
            unplanned: Vec::new(),
            recovery_errors: Vec::new(),
        }
    }

    async fn drive(mut self) -> anyhow::Result<ChaosReport> {
        let started_at = Utc::now();
        let load = self.start_load()?;
        self.started = Instant::now();
        for step in self.schedule.timeline() {
            self.supervise_until(self.started + step.at).await?;
            self.apply(step).await;
        }
        let faults_over = self.seconds();
        self.say("every fault is over; waiting for the last checkouts");
        let load = self.supervise_load(load).await?;
        let load_over = self.seconds();
        self.say(&format!(
            "load over: {} orders placed; waiting until every process is ready",
            load.totals.placed
        ));
        self.bring_everything_back().await;
        self.say("waiting until the system is quiet");
        let convergence = self.converge(faults_over, load_over).await?;
        let invariants = self.checker().await?.check().await?;
        Ok(ChaosReport {
            schedule: self.schedule.name.clone(),
            started_at: started_at.to_rfc3339(),
            machine: shipshape_loadtest::report::Machine::detect(),
            kinds: self.schedule.kinds(),
            faults: self.applied,
            unplanned_restarts: self.unplanned,
            recovery_errors: self.recovery_errors,
            convergence,
            invariants,
            load,
            stop_problems: None,
        })
    }

    /// Starts the open-model load in the background: the schedule's rate
    /// for as long as its order count takes, as one customer, with an
    /// operator's token to keep the stock up.
    fn start_load(&self) -> anyhow::Result<LoadTask> {
        let arrivals = Arrivals::constant(
            Rate::new(self.schedule.rate)?,
            self.schedule.load_duration(),
        );
        let mut load = RunOptions::new(self.stack.gateway_url(), Load::Open(arrivals));
        load.token = Some(Secret::new(self.stack.token("chaos-shopper", &[])?));
        load.admin_token = Some(Secret::new(self.stack.token("chaos-operator", &["admin"])?));
        load.progress = false;
        Ok(LoadTask(tokio::spawn(async move {
            shipshape_loadtest::run::run(&load).await
        })))
    }

    /// Seconds since the load started.
    fn seconds(&self) -> f64 {
        round_ms(self.started.elapsed())
    }

    /// Waits until `deadline`, restarting any process that exited on its
    /// own meanwhile.
    async fn supervise_until(&mut self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            self.supervise().await?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::time::sleep((deadline - now).min(TICK)).await;
        }
    }

    /// Restarts every process that is down although the schedule did not
    /// stop it, the broker included.
    async fn supervise(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.stack.broker_exited()? {
            let at_secs = self.seconds();
            self.say(&format!(
                "the broker exited on its own ({status}); restarting it"
            ));
            let restart = self.stack.start_broker().await;
            self.unplanned.push(UnplannedRestart {
                service: "broker".to_owned(),
                at_secs,
                exit_status: status.to_string(),
                restart_error: restart.err().map(|e| format!("{e:#}")),
            });
        }
        let exited = self.stack.exited()?;
        for (replica, status) in exited {
            if self.stopped.contains(&replica) {
                continue;
            }
            // A process that dies as soon as it starts is not restarted
            // more than once per backoff, as Kubernetes would back off.
            if self
                .restarted_at
                .get(&replica)
                .is_some_and(|at| at.elapsed() < RESTART_BACKOFF)
            {
                continue;
            }
            let at_secs = self.seconds();
            let exit_status = if self.failed_restarts.remove(&replica) {
                format!("down since its planned restart failed ({status})")
            } else {
                status.to_string()
            };
            self.say(&format!("{replica}: {exit_status}; restarting it"));
            let restart = self.stack.launch(replica).err().map(|e| format!("{e:#}"));
            self.restarted_at.insert(replica, Instant::now());
            self.unplanned.push(UnplannedRestart {
                service: replica.name(),
                at_secs,
                exit_status,
                restart_error: restart,
            });
        }
        Ok(())
    }

    /// Waits for the load to end, supervising meanwhile.
    async fn supervise_load(&mut self, mut load: LoadTask) -> anyhow::Result<RunReport> {
        loop {
            tokio::select! {
                finished = &mut load.0 => {
                    return finished.context("the load task panicked")?.context("the load");
                }
                () = tokio::time::sleep(TICK) => self.supervise().await?,
            }
        }
    }

    async fn apply(&mut self, step: Step) {
        let action = self.schedule.faults[step.fault].action.clone();
        let at_secs = self.seconds();
        let outcome = match step.edge {
            Edge::Begin => self.begin(&action).await,
            Edge::End => self.end(&action).await,
        };
        let (detail, error) = match outcome {
            Ok(detail) => (detail, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let verb = match step.edge {
            Edge::Begin => "",
            Edge::End => "end of ",
        };
        self.say(&format!(
            "{verb}#{} {action}{}{}",
            step.fault + 1,
            detail.as_ref().map_or(String::new(), |d| format!(": {d}")),
            error
                .as_ref()
                .map_or(String::new(), |e| format!(" FAILED: {e}"))
        ));
        match step.edge {
            Edge::Begin => self.applied.push(AppliedFault {
                fault: step.fault + 1,
                kind: action.kind(),
                description: action.to_string(),
                planned_at_secs: round_ms(self.schedule.faults[step.fault].at),
                began_at_secs: at_secs,
                ended_at_secs: action.duration().is_none().then_some(at_secs),
                detail,
                errors: error.into_iter().collect(),
            }),
            Edge::End => {
                if let Some(applied) = self.applied.iter_mut().find(|a| a.fault == step.fault + 1) {
                    applied.ended_at_secs = Some(at_secs);
                    applied.errors.extend(error);
                }
            }
        }
    }

    /// Applies a fault; returns what is worth reporting about it.
    async fn begin(&mut self, action: &Action) -> anyhow::Result<Option<String>> {
        match *action {
            Action::Kill { replica, .. } => {
                self.stopped.insert(replica);
                self.stack.kill(replica)?;
                Ok(None)
            }
            Action::Terminate { replica, .. } => {
                self.stopped.insert(replica);
                let status = self.stack.terminate(replica).await?;
                Ok(Some(format!("exited with {status}")))
            }
            Action::ScaleOut { service } => {
                // Not waited for: the supervisor and the convergence wait
                // see to it like any other process.
                let added = self.stack.launch_replica(service)?;
                Ok(Some(format!("started {added}")))
            }
            Action::BrokerRestart { .. } => {
                self.stack.kill_broker()?;
                Ok(None)
            }
            Action::BrokerPause { .. } => {
                self.stack.pause_broker()?;
                Ok(None)
            }
            Action::KillConnections { service } => {
                let ended = self.stack.terminate_database_connections(service).await?;
                Ok(Some(format!("{ended} sessions ended")))
            }
            Action::Network { link, effect, .. } => {
                self.stack.fault(link)?.set(effect);
                Ok(None)
            }
            Action::Psp { faults, .. } => {
                self.set_psp_faults(faults).await?;
                Ok(None)
            }
        }
    }

    /// Undoes a lasting fault.
    async fn end(&mut self, action: &Action) -> anyhow::Result<Option<String>> {
        match *action {
            Action::Kill { replica, .. } | Action::Terminate { replica, .. } => {
                self.stopped.remove(&replica);
                if let Err(e) = self.stack.launch(replica) {
                    self.failed_restarts.insert(replica);
                    return Err(e);
                }
            }
            Action::BrokerRestart { .. } => self.stack.start_broker().await?,
            Action::BrokerPause { .. } => self.stack.resume_broker()?,
            Action::KillConnections { .. } | Action::ScaleOut { .. } => {}
            Action::Network { link, .. } => self.stack.fault(link)?.clear(),
            Action::Psp { .. } => self.set_psp_faults(PspFaults::default()).await?,
        }
        Ok(None)
    }

    async fn set_psp_faults(&self, faults: PspFaults) -> anyhow::Result<()> {
        let url = format!("{}/admin/faults", self.stack.psp_url());
        self.http
            .put(&url)
            .json(&faults)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("PUT {url}"))?;
        Ok(())
    }

    /// After the last fault: whatever is still down (a restart that failed)
    /// is started, and every process must answer `/readyz` again.
    async fn bring_everything_back(&mut self) {
        self.stopped.clear();
        if let Err(e) = self.supervise().await {
            self.recovery_error(format!("supervising failed: {e:#}"));
        }
        if !self.stack.broker_running()
            && let Err(e) = self.stack.start_broker().await
        {
            self.recovery_error(format!("the broker did not start again: {e:#}"));
        }
        if let Err(e) = self.stack.wait_all_ready(READY_AFTER_FAULTS).await {
            self.recovery_error(format!(
                "not every process is ready after the faults: {e:#}"
            ));
        }
    }

    fn recovery_error(&mut self, error: String) {
        self.say(&error);
        self.recovery_errors.push(error);
    }

    /// Waits until nothing is in flight: every order terminal, consumer lag
    /// 0, every outbox empty, no payment waiting for the PSP.
    async fn converge(
        &mut self,
        faults_over_secs: f64,
        load_over_secs: f64,
    ) -> anyhow::Result<Convergence> {
        let checker = self.checker().await?;
        let deadline = Instant::now() + self.schedule.convergence_timeout;
        let mut last_said = Instant::now();
        loop {
            self.supervise().await?;
            // A source that cannot be read yet (the broker's metadata after
            // its restart, say) is retried until the timeout like any other
            // sign of a system still settling.
            let busy = match checker.check_quiet().await {
                Ok(busy) => busy,
                Err(e) if Instant::now() < deadline => {
                    self.say(&format!("cannot check yet: {e:#}"));
                    tokio::time::sleep(TICK).await;
                    continue;
                }
                Err(e) => {
                    let mut never = Convergence::not_yet(faults_over_secs, load_over_secs);
                    never.unreadable = Some(format!("{e:#}"));
                    return Ok(never);
                }
            };
            if busy.is_empty() {
                let quiet_at = self.seconds();
                return Ok(Convergence {
                    quiet_at_secs: Some(quiet_at),
                    after_last_fault_secs: Some(round3(quiet_at - faults_over_secs)),
                    after_load_secs: Some(round3(quiet_at - load_over_secs)),
                    ..Convergence::not_yet(faults_over_secs, load_over_secs)
                });
            }
            if last_said.elapsed() >= PROGRESS_EVERY {
                last_said = Instant::now();
                self.say(&format!(
                    "waiting until quiet: {} still in flight, e.g. {}",
                    busy.len(),
                    busy[0]
                ));
            }
            if Instant::now() >= deadline {
                return Ok(Convergence {
                    still_busy: busy,
                    ..Convergence::not_yet(faults_over_secs, load_over_secs)
                });
            }
            tokio::time::sleep(TICK).await;
        }
    }

    async fn checker(&self) -> anyhow::Result<Checker> {
        let url = |service: Service| -> anyhow::Result<String> {
            self.stack
                .database_url(service)
                .map(str::to_owned)
                .with_context(|| format!("{service} has no database"))
        };
        Ok(Checker::connect(Sources {
            order_db: url(Service::Order)?,
            inventory_db: url(Service::Inventory)?,
            payment_db: url(Service::Payment)?,
            shipping_db: url(Service::Shipping)?,
            psp_url: Some(self.stack.psp_url()),
            broker: Some(self.stack.broker_admin()),
            topic_prefix: self.stack.topic_prefix().to_owned(),
        })
        .await?)
    }

    fn say(&self, line: &str) {
        if self.options.progress {
            eprintln!("[{:>7.1} s] {line}", self.started.elapsed().as_secs_f64());
        }
    }
}

fn round_ms(duration: Duration) -> f64 {
    round3(duration.as_secs_f64())
}
