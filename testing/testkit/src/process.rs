//! Supervision of the child processes the kit starts (the broker and the
//! services): their output goes to a log file, they are stopped with SIGTERM
//! (graceful) or SIGKILL, and they are always reaped, even when a test
//! panics, because dropping a [`Process`] kills it.

use std::fmt::Write as _;
use std::fs::{OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shipshape_telemetry::redact::{REDACTED, escape_control_chars, is_secret_name, redact};

/// How often a waiting loop looks at a child again.
const POLL: Duration = Duration::from_millis(20);

/// The mode of the log files: readable by their owner only. A service's log
/// may still hold what no redaction can recognise (a customer's data, a
/// secret in an unusual shape).
const LOG_MODE: u32 = 0o600;

/// How a stop request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// The process exited on its own after SIGTERM.
    Exited(ExitStatus),
    /// It was still running when the grace period ended and was SIGKILLed.
    Killed(ExitStatus),
}

/// A running (or exited, not yet forgotten) child process.
#[derive(Debug)]
pub(crate) struct Process {
    label: String,
    child: Child,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` with stdin closed and stdout and stderr appended to
    /// `log_path`, after a header line that records the command and the
    /// environment it was given (so a log shows every restart), secrets
    /// hidden ([`describe`]). The log is readable by its owner only.
    ///
    /// With `own_process_group`, the child leads a new process group: a
    /// terminal's Ctrl-C then reaches only the caller, which stops children
    /// in its own order. Without it, whoever signals the caller's group (a
    /// test runner on timeout) stops the children too.
    pub(crate) fn spawn(
        label: &str,
        mut command: Command,
        log_path: &Path,
        own_process_group: bool,
    ) -> anyhow::Result<Self> {
        let mut log = open_log(log_path)?;
        writeln!(
            log,
            "--- shipshape-testkit: starting {label}: {}",
            describe(&command)
        )
        .with_context(|| format!("writing to {}", log_path.display()))?;
        let stderr = log
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        if own_process_group {
            command.process_group(0);
        }
        let child = command.spawn().with_context(|| {
            format!(
                "starting {label} ({})",
                Path::new(command.get_program()).display()
            )
        })?;
        Ok(Self {
            label: label.to_owned(),
            child,
            log_path: log_path.to_owned(),
            status: None,
        })
    }

    /// What the process is called in messages.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// The operating system's id of the process.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its stdout and stderr go.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its exit status if it has exited, without waiting.
    pub(crate) fn try_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("checking whether {} is still running", self.label))?;
        }
        Ok(self.status)
    }

    /// Sends `signal` unless the process has already been reaped.
    fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.pid()).context("process id out of range")?;
        match kill(Pid::from_raw(pid), signal) {
            // Already gone between the check and the signal: nothing to do.
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("sending {signal} to {}", self.label)),
        }
    }

    /// Freezes the process (SIGSTOP) until [`Process::resume`].
    pub(crate) fn pause(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Lets a paused process run again (SIGCONT).
    pub(crate) fn resume(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// SIGKILLs the process (if it still runs) and reaps it.
    pub(crate) fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {} to exit", self.label))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub(crate) async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Asks the process to stop with SIGTERM and waits up to `grace` for it
    /// to exit; SIGKILLs it if it is still running then.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Stopped> {
        self.request_stop()?;
        self.finish_stop(grace).await
    }

    /// The first half of [`Process::terminate`]: sends SIGTERM (unless the
    /// process has exited), so several processes can stop concurrently.
    pub(crate) fn request_stop(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// The second half of [`Process::terminate`]: waits up to `grace` for
    /// the exit, then SIGKILLs.
    pub(crate) async fn finish_stop(&mut self, grace: Duration) -> anyhow::Result<Stopped> {
        match self.wait_exit(grace).await? {
            Some(status) => Ok(Stopped::Exited(status)),
            None => Ok(Stopped::Killed(self.kill()?)),
        }
    }

    /// The last `lines` lines of its log, for error messages.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("shipshape-testkit: could not stop {}: {e:#}", self.label);
        }
    }
}

/// Opens the log file at `path` for appending, creating it if need be,
/// readable by its owner only ([`LOG_MODE`]): a mode given at opening only
/// applies to a new file, so one left by an earlier run (or an older test
/// kit) has its mode set again.
fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_MODE)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))?;
    let mode = log
        .metadata()
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o777 != LOG_MODE {
        log.set_permissions(Permissions::from_mode(LOG_MODE))
            .with_context(|| {
                format!(
                    "making {} readable by its owner only (mode {mode:o})",
                    path.display()
                )
            })?;
    }
    Ok(log)
}

/// `command` as a shell would read it, with its secrets hidden, for logs
/// and error messages: `Command`'s own `Debug` shows the environment it
/// sets in full, a JWT secret and database passwords included.
///
/// The working directory (`cd DIR &&`), the variables removed (`env -u
/// NAME`) and set (`NAME="value"`), then the program and its arguments,
/// quoted. A variable whose name names a secret shows `***`; every value,
/// the program and the arguments have URL credentials and secret pairs
/// (`--password=x`) hidden.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = String::new();
    // Writing to a `String` cannot fail.
    if let Some(dir) = command.get_current_dir() {
        let _ = write!(text, "cd {:?} && ", redact(&dir.to_string_lossy()));
    }
    let mut set = String::new();
    let mut removed = String::new();
    for (name, value) in command.get_envs() {
        let name = name.to_string_lossy();
        let name = escape_control_chars(&name);
        match value {
            Some(_) if is_secret_name(&name) => {
                let _ = write!(set, "{name}={REDACTED:?} ");
            }
            Some(value) => {
                let _ = write!(set, "{name}={:?} ", redact(&value.to_string_lossy()));
            }
            None => {
                let _ = write!(removed, "-u {name} ");
            }
        }
    }
    if !removed.is_empty() {
        let _ = write!(text, "env {removed}");
    }
    text.push_str(&set);
    let _ = write!(
        text,
        "{:?}",
        redact(&command.get_program().to_string_lossy())
    );
    for arg in command.get_args() {
        let _ = write!(text, " {:?}", redact(&arg.to_string_lossy()));
    }
    text
}

/// The last `lines` lines of the file at `path` (or why it cannot be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs `command` to completion and fails with its output when it fails;
/// used for short helper commands (`initdb`, `pg_ctl`, `pip`).
pub(crate) fn run(mut command: Command, what: &str) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot run {}", describe(&command)))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}\n{}{}",
            output.status,
            describe(&command),
            stdout.trim_end(),
            stderr.trim_end()
        );
    }
    Ok(format!("{stdout}{stderr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scratch::ScratchDir;

    fn log_file(name: &str) -> (ScratchDir, PathBuf) {
        let dir = ScratchDir::new("process");
        let path = dir.path().join(name);
        (dir, path)
    }

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_exit_is_seen() {
        let (_dir, log) = log_file("echo.log");
        let mut process = Process::spawn(
            "echo",
            shell("echo hello; echo oops >&2; exit 3"),
            &log,
            false,
        )
        .expect("spawn");
        let status = process
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("wait")
            .expect("the shell exits");
        assert_eq!(status.code(), Some(3));
        assert_eq!(process.log_tail(2), "hello\noops");
        assert!(tail(&log, 10).starts_with("--- shipshape-testkit: starting echo"));
    }

    #[tokio::test]
    async fn terminate_stops_a_process_that_honours_sigterm() {
        let (_dir, log) = log_file("sleep.log");
        let mut process =
            Process::spawn("sleeper", shell("exec sleep 30"), &log, false).expect("spawn");
        let started = Instant::now();
        let stopped = process
            .terminate(Duration::from_secs(10))
            .await
            .expect("terminate");
        assert!(
            matches!(stopped, Stopped::Exited(_)),
            "sleep exits on SIGTERM: {stopped:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn terminate_escalates_to_sigkill_after_the_grace_period() {
        let (_dir, log) = log_file("stubborn.log");
        // Ignores SIGTERM; `exec` keeps the trap and makes sleep the process.
        let mut process = Process::spawn(
            "stubborn",
            shell("trap '' TERM; printf 'ar%s\\n' med; exec sleep 30"),
            &log,
            true,
        )
        .expect("spawn");
        // Let the shell install its trap before the signal arrives.
        let deadline = Instant::now() + Duration::from_secs(5);
        // (The header line quotes the script, so look for the whole line.)
        while tail(&log, 1) != "armed" && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let stopped = process
            .terminate(Duration::from_millis(300))
            .await
            .expect("terminate");
        match stopped {
            Stopped::Killed(status) => assert!(!status.success()),
            other => panic!("expected a SIGKILL, got {other:?}"),
        }
    }

    #[test]
    fn dropping_a_process_kills_and_reaps_it() {
        let (_dir, log) = log_file("dropped.log");
        let process =
            Process::spawn("dropped", shell("exec sleep 30"), &log, false).expect("spawn");
        let pid = Pid::from_raw(i32::try_from(process.pid()).expect("pid"));
        drop(process);
        // Reaped: the pid no longer exists (not even as a zombie).
        assert_eq!(kill(pid, None), Err(Errno::ESRCH));
    }

    #[tokio::test]
    async fn the_log_keeps_secrets_out_and_its_owner_alone_in() {
        let (_dir, log) = log_file("secret.log");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("the log exists")
                .permissions()
                .mode()
                & 0o777
        };
        for earlier_mode in [None, Some(0o644)] {
            if let Some(earlier_mode) = earlier_mode {
                // A log an earlier run (or an older test kit) left readable.
                std::fs::set_permissions(&log, Permissions::from_mode(earlier_mode))
                    .expect("chmod");
            }
            let mut command = Command::new("true");
            command
                .env("JWT_HS256_SECRET", "s3cret")
                .env("DATABASE_URL", "postgres://u:pw@127.0.0.1/db")
                .env_remove("HTTP_PROXY")
                .arg("--db-password=hunter2");
            let mut process = Process::spawn("quiet", command, &log, false).expect("spawn");
            process
                .wait_exit(Duration::from_secs(10))
                .await
                .expect("wait")
                .expect("true exits");
            let text = std::fs::read_to_string(&log).expect("the log");
            for secret in ["s3cret", "pw@", "hunter2"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(
                text.ends_with(
                    "starting quiet: env -u HTTP_PROXY DATABASE_URL=\"postgres://u:***@127.0.0.1/db\" \
                     JWT_HS256_SECRET=\"***\" \"true\" \"--db-password=***\"\n"
                ),
                "{text}"
            );
            assert_eq!(mode(&log), 0o600, "after {earlier_mode:?}");
        }
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let (_dir, log) = log_file("missing.log");
        let error = Process::spawn(
            "ghost",
            Command::new("/nonexistent/shipshape-ghost"),
            &log,
            false,
        )
        .expect_err("cannot start");
        assert!(format!("{error:#}").contains("starting ghost"));
    }
}
