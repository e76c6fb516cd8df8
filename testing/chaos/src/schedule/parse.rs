//! Reading a schedule: its TOML file as written, and the checks that turn
//! each part of it into the validated model.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use shipshape_faultproxy::Fault as NetworkFault;
use shipshape_testkit::stack::{Link, Replica, Service};

use super::validate::check_overlaps;
use super::{Action, Fault, LINKS, PspFaults, Schedule};

/// The most replicas of a service a schedule may run.
const MAX_REPLICAS: usize = 4;

/// The longest a fault, a delay or an injected latency may last: longer
/// than any saga deadline, short enough that a typo cannot hang a run.
const LONGEST: Duration = Duration::from_secs(600);

fn parse_link(name: &str) -> anyhow::Result<Link> {
    LINKS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, link)| *link)
        .with_context(|| {
            let names: Vec<&str> = LINKS.iter().map(|(name, _)| *name).collect();
            format!("unknown link `{name}`; links are {}", names.join(", "))
        })
}

fn parse_service(name: &str) -> anyhow::Result<Service> {
    if name == "psp" {
        return Ok(Service::Psp);
    }
    Service::ALL
        .into_iter()
        .find(|service| service.name() == name)
        .with_context(|| {
            let names: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
            format!(
                "unknown service `{name}`; services are {}",
                names.join(", ")
            )
        })
}

fn one() -> usize {
    1
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    #[serde(default = "one")]
    replicas: usize,
    load: LoadSpec,
    #[serde(default)]
    convergence: ConvergenceSpec,
    #[serde(default, rename = "fault")]
    faults: Vec<FaultSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadSpec {
    rate: f64,
    orders: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvergenceSpec {
    timeout_secs: f64,
}

impl Default for ConvergenceSpec {
    fn default() -> Self {
        Self {
            timeout_secs: 300.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum FaultSpec {
    Kill {
        at_secs: f64,
        service: String,
        restart_after_secs: f64,
        #[serde(default)]
        replica: usize,
    },
    Terminate {
        at_secs: f64,
        service: String,
        restart_after_secs: f64,
        #[serde(default)]
        replica: usize,
    },
    ScaleOut {
        at_secs: f64,
        service: String,
    },
    BrokerRestart {
        at_secs: f64,
        down_secs: f64,
    },
    BrokerPause {
        at_secs: f64,
        for_secs: f64,
    },
    KillConnections {
        at_secs: f64,
        database: String,
    },
    Network {
        at_secs: f64,
        for_secs: f64,
        link: String,
        effect: String,
        latency_ms: Option<u64>,
    },
    Psp {
        at_secs: f64,
        for_secs: f64,
        #[serde(default)]
        latency_ms: u64,
        #[serde(default)]
        error_rate: f64,
        #[serde(default)]
        lose_response_rate: f64,
    },
}

/// Seconds from a schedule as a duration: finite, not negative, at most
/// [`LONGEST`] (or `limit`).
fn seconds(value: f64, what: &str, limit: Duration) -> anyhow::Result<Duration> {
    if !value.is_finite() || value < 0.0 {
        bail!("{what} must be a number of seconds ≥ 0, not {value}");
    }
    let duration = Duration::from_secs_f64(value);
    if duration > limit {
        bail!("{what} is {value} s; at most {} s", limit.as_secs_f64());
    }
    Ok(duration)
}

fn positive_seconds(value: f64, what: &str) -> anyhow::Result<Duration> {
    let duration = seconds(value, what, LONGEST)?;
    if duration.is_zero() {
        bail!("{what} must be more than 0 s");
    }
    Ok(duration)
}

fn share(value: f64, what: &str) -> anyhow::Result<f64> {
    if !(0.0..=1.0).contains(&value) {
        bail!("{what} must be between 0 and 1, not {value}");
    }
    Ok(value)
}

fn latency(ms: u64, what: &str) -> anyhow::Result<Duration> {
    let latency = Duration::from_millis(ms);
    if latency > Duration::from_secs(60) {
        bail!("{what} is {ms} ms; at most 60000 ms");
    }
    Ok(latency)
}

/// Replica `index` of the service named `name`, which must be one of the
/// `replicas` the run starts.
fn parse_replica(name: &str, index: usize, replicas: usize) -> anyhow::Result<Replica> {
    let service = parse_service(name)?;
    let count = if Service::REPLICATED.contains(&service) {
        replicas
    } else {
        1
    };
    if index >= count {
        bail!(
            "replica = {index}, but the run starts {count} {service} replica(s), numbered from 0"
        );
    }
    Ok(Replica::new(service, index))
}

impl FaultSpec {
    fn validate(self, load: Duration, replicas: usize) -> anyhow::Result<Fault> {
        let starts = |at_secs: f64| seconds(at_secs, "at_secs", load);
        let (at, action) = match self {
            FaultSpec::Kill {
                at_secs,
                service,
                restart_after_secs,
                replica,
            } => (
                starts(at_secs)?,
                Action::Kill {
                    replica: parse_replica(&service, replica, replicas)?,
                    down: positive_seconds(restart_after_secs, "restart_after_secs")?,
                },
            ),
            FaultSpec::Terminate {
                at_secs,
                service,
                restart_after_secs,
                replica,
            } => (
                starts(at_secs)?,
                Action::Terminate {
                    replica: parse_replica(&service, replica, replicas)?,
                    down: positive_seconds(restart_after_secs, "restart_after_secs")?,
                },
            ),
            FaultSpec::ScaleOut { at_secs, service } => {
                let service = parse_service(&service)?;
                if !Service::REPLICATED.contains(&service) {
                    bail!("only order, inventory, payment and shipping scale out, not {service}");
                }
                (starts(at_secs)?, Action::ScaleOut { service })
            }
            FaultSpec::BrokerRestart { at_secs, down_secs } => (
                starts(at_secs)?,
                Action::BrokerRestart {
                    down: positive_seconds(down_secs, "down_secs")?,
                },
            ),
            FaultSpec::BrokerPause { at_secs, for_secs } => (
                starts(at_secs)?,
                Action::BrokerPause {
                    lasting: positive_seconds(for_secs, "for_secs")?,
                },
            ),
            FaultSpec::KillConnections { at_secs, database } => {
                let service = parse_service(&database)?;
                if !service.owns_database() {
                    bail!("{service} has no database");
                }
                (starts(at_secs)?, Action::KillConnections { service })
            }
            FaultSpec::Network {
                at_secs,
                for_secs,
                link,
                effect,
                latency_ms,
            } => {
                let effect = match (effect.as_str(), latency_ms) {
                    ("latency", Some(ms)) if ms > 0 => {
                        NetworkFault::Latency(latency(ms, "latency_ms")?)
                    }
                    ("latency", _) => bail!("effect = \"latency\" needs latency_ms > 0"),
                    (_, Some(_)) => bail!("latency_ms only goes with effect = \"latency\""),
                    ("drop", None) => NetworkFault::Drop,
                    ("reset", None) => NetworkFault::Reset,
                    ("blackhole", None) => NetworkFault::Blackhole,
                    (other, None) => bail!(
                        "unknown effect `{other}`; effects are latency, drop, reset, blackhole"
                    ),
                };
                (
                    starts(at_secs)?,
                    Action::Network {
                        link: parse_link(&link)?,
                        effect,
                        lasting: positive_seconds(for_secs, "for_secs")?,
                    },
                )
            }
            FaultSpec::Psp {
                at_secs,
                for_secs,
                latency_ms,
                error_rate,
                lose_response_rate,
            } => {
                let faults = PspFaults {
                    latency_ms: latency(latency_ms, "latency_ms")?.as_millis() as u64,
                    error_rate: share(error_rate, "error_rate")?,
                    lose_response_rate: share(lose_response_rate, "lose_response_rate")?,
                };
                if faults == PspFaults::default() {
                    bail!("a psp fault needs latency_ms, error_rate or lose_response_rate");
                }
                (
                    starts(at_secs)?,
                    Action::Psp {
                        faults,
                        lasting: positive_seconds(for_secs, "for_secs")?,
                    },
                )
            }
        };
        Ok(Fault { at, action })
    }
}

impl Schedule {
    /// Parses and validates a schedule; `default_name` names it when the
    /// file does not (its file name, say).
    pub fn parse(text: &str, default_name: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text).context("reading the schedule")?;
        let rate = file.load.rate;
        if !rate.is_finite() || rate <= 0.0 || rate > 1000.0 {
            bail!("load.rate must be more than 0 and at most 1000 checkouts/s, not {rate}");
        }
        if file.load.orders == 0 {
            bail!("load.orders must be at least 1");
        }
        if !(1..=MAX_REPLICAS).contains(&file.replicas) {
            bail!(
                "replicas must be from 1 to {MAX_REPLICAS}, not {}",
                file.replicas
            );
        }
        let schedule = Self {
            name: file.name.unwrap_or_else(|| default_name.to_owned()),
            replicas: file.replicas,
            rate,
            orders: file.load.orders,
            convergence_timeout: positive_seconds(
                file.convergence.timeout_secs,
                "convergence.timeout_secs",
            )?,
            faults: Vec::new(),
        };
        let load = schedule.load_duration();
        let faults = file
            .faults
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                spec.validate(load, file.replicas)
                    .with_context(|| format!("fault #{} in the schedule", index + 1))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        check_overlaps(&faults)?;
        let schedule = Self { faults, ..schedule };
        if schedule.max_replicas() > MAX_REPLICAS {
            bail!(
                "scale-out faults take a service to {} replicas; at most {MAX_REPLICAS}",
                schedule.max_replicas()
            );
        }
        schedule.check_proxies_fit_replicas()?;
        Ok(schedule)
    }

    /// Reads and validates the schedule in `path`.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the schedule {}", path.display()))?;
        let name = path
            .file_stem()
            .map_or_else(|| "schedule".into(), |stem| stem.to_string_lossy());
        Self::parse(&text, &name).with_context(|| format!("in {}", path.display()))
    }
}
