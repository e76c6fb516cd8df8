//! Memory and CPU of the processes under test, read from `/proc` once a
//! second while a run goes on: resident memory (`VmRSS`, and `RssAnon`, the
//! part no other process shares) from `/proc/<pid>/status`, CPU time
//! (`utime + stime`) from `/proc/<pid>/stat`.
//!
//! Besides processes named by pid, it can watch Postgres: the backends
//! serving the databases whose names start with a prefix (grouped by
//! database, found by their process titles, so connections opened during
//! the run are counted too) and the server's own processes (postmaster,
//! checkpointer, WAL writer, ...), which every database on the server
//! shares. A backend's `VmRSS` counts the shared buffers it has touched, so
//! summing it over backends counts shared memory more than once; `RssAnon`
//! does not.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::stats::round3;

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// Processes by name (`gateway`, `broker`, ...).
    pub pids: Vec<(String, u32)>,
    /// Watch the Postgres backends of databases named `<prefix>...`, and the
    /// server's own processes.
    pub postgres_prefix: Option<String>,
    /// Watch this process too (the load generator shares the machine).
    pub this_process: bool,
}

impl Watch {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.postgres_prefix.is_none() && !self.this_process
    }
}

/// One reading of one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub rss_kib: u64,
    pub rss_anon_kib: u64,
    /// `utime + stime`, in clock ticks.
    pub cpu_ticks: u64,
    pub ppid: u32,
}

/// `(ppid, utime + stime)` from the text of `/proc/<pid>/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), ..., utime (14), stime (15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `(VmRSS, RssAnon)` in KiB from the text of `/proc/<pid>/status`; 0 for a
/// field that is missing (a kernel thread, or a zombie).
pub fn parse_status(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// Reads one process; `None` when it is gone.
pub fn read(pid: u32) -> Option<Reading> {
    let dir = Path::new("/proc").join(pid.to_string());
    let (ppid, cpu_ticks) = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let (rss_kib, rss_anon_kib) = parse_status(&std::fs::read_to_string(dir.join("status")).ok()?);
    Some(Reading {
        rss_kib,
        rss_anon_kib,
        cpu_ticks,
        ppid,
    })
}

/// Which group a Postgres process belongs to, from its process title
/// (`postgres: 15/main: shipshape_order shipshape_lt1a2b_order
/// 127.0.0.1(51234) idle`): `postgres:<database>` for a backend of a
/// database named `<prefix>...`, `postgres (server)` for a process without
/// a client (checkpointer, WAL writer, ...), `None` for another database's
/// backend.
pub fn postgres_group(title: &str, prefix: &str) -> Option<String> {
    let rest = title.strip_prefix("postgres: ")?;
    if let Some(database) = rest
        .split_whitespace()
        .find(|word| word.starts_with(prefix))
    {
        return Some(format!("postgres:{database}"));
    }
    // Client backends name their client: `host(port)` or `[local]`.
    let has_client = rest.contains('(') || rest.contains("[local]");
    (!has_client).then(|| "postgres (server)".to_owned())
}

/// Every Postgres process to watch, by group: the backends and server
/// processes [`postgres_group`] picks, plus the postmaster (the parent of
/// every one of them).
fn postgres_processes(prefix: &str) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut parents = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if let Some(group) = postgres_group(title.trim(), prefix) {
            if let Some(reading) = read(pid) {
                *parents.entry(reading.ppid).or_insert(0) += 1;
            }
            found.push((group, pid));
        }
    }
    // The postmaster is the parent most of them share.
    if let Some((&postmaster, _)) = parents.iter().max_by_key(|(_, n)| **n)
        && postmaster > 1
    {
        found.push(("postgres (server)".to_owned(), postmaster));
    }
    found
}

/// One watched group over the run.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessReport {
    pub name: String,
    /// The pids seen in the group.
    pub pids: Vec<u32>,
    pub rss_max_mib: f64,
    pub rss_mean_mib: f64,
    pub rss_anon_max_mib: f64,
    /// CPU time used during the run.
    pub cpu_seconds: f64,
    /// Mean CPU use, 100 = one core busy all the time.
    pub cpu_percent: f64,
    /// RSS in MiB, once a second.
    pub rss_mib_samples: Vec<f64>,
}

#[derive(Default)]
struct Group {
    pids: Vec<u32>,
    rss_samples_kib: Vec<u64>,
    rss_anon_max_kib: u64,
    cpu_ticks: u64,
}

/// Samples the watched processes once a second until stopped.
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<ProcessReport>>,
}

impl Sampler {
    pub fn start(watch: Watch) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let ticks_per_second = clock_ticks_per_second().await;
            let started = Instant::now();
            let mut groups: BTreeMap<String, Group> = BTreeMap::new();
            // CPU ticks of each pid at its last reading: the first reading of
            // a pid that existed before the run is its baseline; one that
            // appears later started during the run and counts in full.
            let mut last_ticks: HashMap<u32, u64> = HashMap::new();
            let mut first = true;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let finished = tokio::select! {
                    _ = tick.tick() => false,
                    _ = stopped.changed() => true,
                };
                let targets = targets(&watch);
                let mut rss: BTreeMap<&str, u64> = BTreeMap::new();
                for (name, pid) in &targets {
                    let Some(reading) = read(*pid) else { continue };
                    let group = groups.entry(name.clone()).or_default();
                    if !group.pids.contains(pid) {
                        group.pids.push(*pid);
                    }
                    let before = last_ticks.insert(*pid, reading.cpu_ticks);
                    let used = match before {
                        Some(before) => reading.cpu_ticks.saturating_sub(before),
                        None if first => 0,
                        None => reading.cpu_ticks,
                    };
                    group.cpu_ticks += used;
                    group.rss_anon_max_kib = group.rss_anon_max_kib.max(reading.rss_anon_kib);
                    *rss.entry(name.as_str()).or_default() += reading.rss_kib;
                }
                for (name, kib) in rss {
                    if let Some(group) = groups.get_mut(name) {
                        group.rss_samples_kib.push(kib);
                    }
                }
                first = false;
                if finished {
                    break;
                }
            }
            let elapsed = started.elapsed().as_secs_f64().max(f64::EPSILON);
            groups
                .into_iter()
                .map(|(name, group)| {
                    let mib = |kib: u64| round3(kib as f64 / 1024.0);
                    let samples = group.rss_samples_kib.len().max(1) as f64;
                    let cpu_seconds = group.cpu_ticks as f64 / ticks_per_second;
                    ProcessReport {
                        name,
                        pids: group.pids,
                        rss_max_mib: mib(group.rss_samples_kib.iter().copied().max().unwrap_or(0)),
                        rss_mean_mib: round3(
                            group.rss_samples_kib.iter().sum::<u64>() as f64 / samples / 1024.0,
                        ),
                        rss_anon_max_mib: mib(group.rss_anon_max_kib),
                        cpu_seconds: round3(cpu_seconds),
                        cpu_percent: round3(cpu_seconds / elapsed * 100.0),
                        rss_mib_samples: group.rss_samples_kib.into_iter().map(mib).collect(),
                    }
                })
                .collect()
        });
        Self { stop, task }
    }

    /// Takes a last reading and reports.
    pub async fn finish(self) -> Vec<ProcessReport> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// The name the load generator's own process is reported under.
pub const THIS_PROCESS: &str = "loadtest (this process)";

fn targets(watch: &Watch) -> Vec<(String, u32)> {
    let mut targets = watch.pids.clone();
    if watch.this_process {
        targets.push((THIS_PROCESS.to_owned(), std::process::id()));
    }
    if let Some(prefix) = &watch.postgres_prefix {
        targets.extend(postgres_processes(prefix));
    }
    targets
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), in which
/// `/proc` counts CPU time; 100, its value on every common Linux, if
/// `getconf` cannot say.
async fn clock_ticks_per_second() -> f64 {
    let output = tokio::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .await;
    output
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_end_of_the_name() {
        let stat = "4242 (tokio (worker) 1) S 17 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654 2048 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((17, 325)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn status_gives_resident_memory() {
        let status = "Name:\tshipshape-gatew\nVmPeak:\t  100 kB\nVmRSS:\t   24576 kB\n\
                      RssAnon:\t    8192 kB\nRssFile:\t   16384 kB\n";
        assert_eq!(parse_status(status), (24576, 8192));
        assert_eq!(parse_status("Name:\tkthreadd\n"), (0, 0));
    }

    #[test]
    fn postgres_processes_are_grouped_by_database() {
        let prefix = "shipshape_lt1a2b3c4d_";
        assert_eq!(
            postgres_group(
                "postgres: 15/main: shipshape_order shipshape_lt1a2b3c4d_order 127.0.0.1(51234) idle",
                prefix
            )
            .as_deref(),
            Some("postgres:shipshape_lt1a2b3c4d_order")
        );
        assert_eq!(
            postgres_group("postgres: 15/main: checkpointer", prefix).as_deref(),
            Some("postgres (server)")
        );
        assert_eq!(
            postgres_group("postgres: walwriter", prefix).as_deref(),
            Some("postgres (server)")
        );
        // Someone else's database, locally or over TCP.
        assert_eq!(
            postgres_group("postgres: 15/main: app app [local] idle", prefix),
            None
        );
        assert_eq!(
            postgres_group(
                "postgres: 15/main: x shipshape_t99_order 127.0.0.1(1) idle",
                prefix
            ),
            None
        );
        assert_eq!(
            postgres_group("/usr/lib/postgresql/15/bin/postgres -D x", prefix),
            None
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let reading = read(std::process::id()).expect("our own /proc entry");
        assert!(reading.rss_kib > 0);
        assert!(reading.ppid > 0);
        assert_eq!(read(u32::MAX), None);
    }

    #[tokio::test]
    async fn the_sampler_reports_each_watched_process() {
        let sampler = Sampler::start(Watch {
            pids: vec![
                ("me".to_owned(), std::process::id()),
                ("gone".to_owned(), u32::MAX),
            ],
            postgres_prefix: None,
            this_process: false,
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reports = sampler.finish().await;
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].name, "me");
        assert!(reports[0].rss_max_mib > 0.0);
        assert!(!reports[0].rss_mib_samples.is_empty());
    }
}
