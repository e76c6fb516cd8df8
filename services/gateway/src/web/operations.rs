//! The operator page's figures, from the services' own metrics: each
//! process's `/metrics` (Prometheus text) read on request, and compared with
//! the previous reading for the rates and the p99 over the time between.
//! The parsing and the arithmetic are plain functions; [`Operations`] does
//! the reading.
//!
//! The figures are those of the processes the configured URLs reach (one per
//! service, or every replica when each is listed); the Grafana dashboards
//! are the fleet-wide view.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use shipshape_types::InvalidValue;
use tokio::sync::Mutex;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::http_metrics;

/// The gateway's route of checkouts, in its HTTP metrics.
const CHECKOUT_ROUTE: &str = "/api/v1/orders";
/// How long one `/metrics` may take to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// The samples of a Prometheus text exposition; comments and lines that are
/// not samples are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="1",b="x \"y\""` (the exposition escapes `\`, `"` and newlines).
fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (name, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim_start_matches(',').trim().to_owned(), value);
        text = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// What one reading of every process found.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// Each process's samples, by its configured name; `Err` with why it
    /// could not be read.
    pub processes: Vec<(String, Result<Vec<Sample>, String>)>,
}

impl Reading {
    fn samples(&self) -> impl Iterator<Item = (&str, &Sample)> {
        self.processes
            .iter()
            .filter_map(|(name, read)| Some((name.as_str(), read.as_ref().ok()?)))
            .flat_map(|(name, samples)| samples.iter().map(move |s| (name, s)))
    }

    /// Each process read both times, with its samples then and now: a
    /// process that could not be read once adds nothing to the window
    /// (its all-time counts are not this window's).
    fn pairs<'a>(
        &'a self,
        before: &'a Reading,
    ) -> impl Iterator<Item = (&'a [Sample], &'a [Sample])> {
        self.processes.iter().filter_map(move |(name, now)| {
            let then = before
                .processes
                .iter()
                .find(|(earlier, _)| earlier == name)?
                .1
                .as_ref()
                .ok()?;
            Some((then.as_slice(), now.as_ref().ok()?.as_slice()))
        })
    }
}

/// Checkouts a process answered so far.
fn checkouts(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == http_metrics::REQUESTS && is_checkout(s))
        .map(|s| s.value)
        .sum()
}

/// A process's histogram of checkout durations: cumulative count per upper
/// bound.
fn checkout_buckets(samples: &[Sample]) -> BTreeMap<Bound, f64> {
    let bucket = format!("{}_bucket", http_metrics::DURATION);
    let mut buckets = BTreeMap::new();
    for sample in samples {
        if sample.name != bucket || !is_checkout(sample) {
            continue;
        }
        let Some(le) = sample.label("le").and_then(|le| match le {
            "+Inf" => Some(f64::INFINITY),
            le => le.parse().ok(),
        }) else {
            continue;
        };
        *buckets.entry(Bound(le)).or_insert(0.0) += sample.value;
    }
    buckets
}

/// Orders a process saw reach an outcome so far, by `confirmed` or the
/// cancellation reason.
fn outcomes(samples: &[Sample]) -> BTreeMap<String, f64> {
    let mut outcomes = BTreeMap::new();
    for sample in samples {
        if sample.name != "shipshape_saga_outcomes_total" {
            continue;
        }
        let outcome = match (sample.label("status"), sample.label("reason")) {
            (Some("CONFIRMED"), _) => "confirmed".to_owned(),
            (Some(_), Some(reason)) => reason.to_owned(),
            _ => continue,
        };
        *outcomes.entry(outcome).or_insert(0.0) += sample.value;
    }
    outcomes
}

/// `now - then` of a counter; a process that restarted (its counter
/// reset) counts from zero.
fn increase(then: f64, now: f64) -> f64 {
    if now >= then { now - then } else { now }
}

fn is_checkout(sample: &Sample) -> bool {
    sample.label("route") == Some(CHECKOUT_ROUTE) && sample.label("method") == Some("POST")
}

/// A histogram bucket's upper bound, ordered (bounds are never NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bound(f64);

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The `q` quantile of the observations between two readings of a
/// cumulative histogram, interpolated within its bucket as Prometheus's
/// `histogram_quantile` does; `None` without observations between them.
fn quantile(q: f64, delta: &BTreeMap<Bound, f64>) -> Option<f64> {
    let delta: Vec<(f64, f64)> = delta
        .iter()
        .map(|(bound, count)| (bound.0, *count))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in &delta {
        if count >= rank {
            if bound.is_infinite() {
                // Past the last finite bucket: its bound is all that is known.
                return Some(lower.0);
            }
            let within = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return Some(lower.0 + (bound - lower.0) * within);
        }
        lower = (bound, count);
    }
    None
}

/// The operator page's figures, as `GET /api/v1/admin/operations` answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct OperationsJson {
    /// Seconds between this reading and the previous one the rates and the
    /// p99 are over; `null` on the first reading.
    #[schema(required = true)]
    pub window_secs: Option<f64>,
    /// Checkouts (`POST /api/v1/orders`) per second over the window.
    #[schema(required = true)]
    pub checkouts_per_sec: Option<f64>,
    /// The 99th percentile of the checkouts' response time over the window,
    /// in milliseconds; `null` without checkouts.
    #[schema(required = true)]
    pub checkout_p99_ms: Option<f64>,
    /// Orders that reached an outcome over the window: `confirmed`, or the
    /// cancellation reason.
    pub outcomes: BTreeMap<String, f64>,
    /// Every circuit breaker and bulkhead, by process and downstream.
    pub edges: Vec<EdgeJson>,
    /// Each process read, and whether it answered.
    pub processes: Vec<ProcessJson>,
}

/// One process's calls to one downstream.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct EdgeJson {
    /// The process, as `OPERATOR_METRICS_URLS` names it.
    #[schema(example = "payment")]
    pub process: String,
    #[schema(example = "psp")]
    pub downstream: String,
    /// `closed`, `open` or `half_open`.
    #[schema(example = "closed")]
    pub breaker: String,
    /// Calls holding a bulkhead permit now.
    pub bulkhead_in_use: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ProcessJson {
    pub name: String,
    /// Why its metrics could not be read; `null` when they were.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// The figures of `now`, with rates over the time since `before`.
pub fn figures(before: Option<(&Reading, Duration)>, now: &Reading) -> OperationsJson {
    let mut edges: BTreeMap<(String, String), EdgeJson> = BTreeMap::new();
    for (process, sample) in now.samples() {
        let Some(downstream) = sample.label("downstream") else {
            continue;
        };
        let key = (process.to_owned(), downstream.to_owned());
        let edge = || EdgeJson {
            process: process.to_owned(),
            downstream: downstream.to_owned(),
            breaker: "closed".to_owned(),
            bulkhead_in_use: 0.0,
        };
        if sample.name == shipshape_resilience::telemetry::BREAKER_STATE {
            edges.entry(key).or_insert_with(edge).breaker = match sample.value as i64 {
                1 => "open",
                2 => "half_open",
                _ => "closed",
            }
            .to_owned();
        } else if sample.name == shipshape_resilience::telemetry::BULKHEAD_IN_USE {
            edges.entry(key).or_insert_with(edge).bulkhead_in_use = sample.value;
        }
    }
    let mut figures = OperationsJson {
        edges: edges.into_values().collect(),
        processes: now
            .processes
            .iter()
            .map(|(name, read)| ProcessJson {
                name: name.clone(),
                error: read.as_ref().err().cloned(),
            })
            .collect(),
        ..OperationsJson::default()
    };
    let Some((before, elapsed)) = before else {
        return figures;
    };
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return figures;
    }
    figures.window_secs = Some(secs);
    let mut checkouts_in_window = 0.0;
    let mut buckets_in_window: BTreeMap<Bound, f64> = BTreeMap::new();
    let mut outcomes_in_window: BTreeMap<String, f64> = BTreeMap::new();
    for (then, current) in now.pairs(before) {
        checkouts_in_window += increase(checkouts(then), checkouts(current));
        let earlier = checkout_buckets(then);
        for (bound, count) in checkout_buckets(current) {
            let before = earlier.get(&bound).copied().unwrap_or(0.0);
            *buckets_in_window.entry(bound).or_insert(0.0) += increase(before, count);
        }
        let earlier = outcomes(then);
        for (outcome, count) in outcomes(current) {
            let before = earlier.get(&outcome).copied().unwrap_or(0.0);
            *outcomes_in_window.entry(outcome).or_insert(0.0) += increase(before, count);
        }
    }
    figures.checkouts_per_sec = Some(checkouts_in_window / secs);
    figures.checkout_p99_ms = quantile(0.99, &buckets_in_window).map(|seconds| seconds * 1000.0);
    figures.outcomes = outcomes_in_window;
    figures
}

/// Reads the processes' metrics, and keeps the last reading for the next
/// one's rates.
pub struct Operations {
    http: reqwest::Client,
    /// Each process's name and `/metrics` URL (`OPERATOR_METRICS_URLS`).
    processes: Vec<(String, String)>,
    last: Mutex<Option<(Reading, Instant)>>,
}

impl Operations {
    pub fn new(processes: Vec<(String, String)>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).build()?,
            processes,
            last: Mutex::new(None),
        })
    }

    /// Reads every process now and answers the figures since the last
    /// reading (by anyone: the page polls, and two viewers share a window).
    pub async fn figures(&self) -> OperationsJson {
        let mut reads = tokio::task::JoinSet::new();
        for (index, (_, url)) in self.processes.iter().enumerate() {
            let (http, url) = (self.http.clone(), url.clone());
            reads.spawn(async move { (index, read(&http, &url).await) });
        }
        let mut results: Vec<Result<Vec<Sample>, String>> =
            vec![Err("not read".to_owned()); self.processes.len()];
        while let Some(done) = reads.join_next().await {
            if let Ok((index, result)) = done {
                results[index] = result;
            }
        }
        let now = Reading {
            processes: self
                .processes
                .iter()
                .map(|(name, _)| name.clone())
                .zip(results)
                .collect(),
        };
        let at = Instant::now();
        let mut last = self.last.lock().await;
        let figures = figures(
            last.as_ref()
                .map(|(reading, then)| (reading, at.duration_since(*then))),
            &now,
        );
        *last = Some((now, at));
        figures
    }
}

/// One process's samples, or why they could not be read.
async fn read(http: &reqwest::Client, url: &str) -> Result<Vec<Sample>, String> {
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok(parse(&text))
}

/// The PSP simulator's injected faults, as the operator page sets them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultsJson {
    /// Added before every answer, 0 to 60000.
    #[schema(minimum = 0, maximum = 60000)]
    pub latency_ms: u64,
    /// Fraction of payment calls answered 503 unprocessed, 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub error_rate: f64,
    /// Fraction of payment calls processed (charged) whose answer is lost,
    /// 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub lose_response_rate: f64,
}

impl FaultsJson {
    /// The simulator's own bounds, checked here so that bad input is the
    /// caller's `400`, not the simulator's.
    pub fn check(&self) -> Result<(), InvalidValue> {
        let rate = |value: f64| (0.0..=1.0).contains(&value);
        if self.latency_ms > 60_000 || !rate(self.error_rate) || !rate(self.lose_response_rate) {
            return Err(InvalidValue::new(
                "invalid_faults",
                "latency_ms must be 0 to 60000, and error_rate and lose_response_rate 0 to 1",
            ));
        }
        Ok(())
    }
}

/// The PSP simulator's `/admin/faults`, which answers callers on its own
/// machine, or with its admin token (`PSP_ADMIN_TOKEN`).
pub struct PspAdmin {
    http: reqwest::Client,
    faults_url: String,
    token: Option<String>,
}

impl PspAdmin {
    /// The simulator at `url` (`PSP_ADMIN_URL`, e.g. `http://127.0.0.1:8090`).
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).build()?,
            faults_url: format!("{}/admin/faults", url.trim_end_matches('/')),
            token,
        })
    }

    pub async fn faults(&self) -> Result<FaultsJson, String> {
        self.send(self.http.get(&self.faults_url)).await
    }

    pub async fn set_faults(&self, faults: &FaultsJson) -> Result<FaultsJson, String> {
        self.send(self.http.put(&self.faults_url).json(faults))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<FaultsJson, String> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the PSP simulator answered {}", response.status()));
        }
        response.json().await.map_err(|e| e.to_string())
    }
}

/// `OPERATOR_METRICS_URLS`: `name=url` pairs, comma separated.
pub fn parse_processes(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, url) = pair
                .split_once('=')
                .filter(|(name, url)| !name.trim().is_empty() && url.starts_with("http"))
                .ok_or_else(|| {
                    anyhow::anyhow!("`{pair}` is not `name=http://host:port/metrics`")
                })?;
            Ok((name.trim().to_owned(), url.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = r#"# HELP shipshape_http_requests_total Requests
# TYPE shipshape_http_requests_total counter
shipshape_http_requests_total{method="POST",route="/api/v1/orders",status="202"} 90
shipshape_http_requests_total{method="POST",route="/api/v1/orders",status="400"} 10
shipshape_http_requests_total{method="GET",route="/api/v1/orders",status="200"} 500
shipshape_http_request_duration_seconds_bucket{method="POST",route="/api/v1/orders",status="202",le="0.01"} 40
shipshape_http_request_duration_seconds_bucket{method="POST",route="/api/v1/orders",status="202",le="0.1"} 90
shipshape_http_request_duration_seconds_bucket{method="POST",route="/api/v1/orders",status="202",le="+Inf"} 90
shipshape_breaker_state{downstream="order"} 0
shipshape_bulkhead_in_use{downstream="order"} 3
"#;

    fn reading(processes: &[(&str, &str)]) -> Reading {
        Reading {
            processes: processes
                .iter()
                .map(|(name, text)| ((*name).to_owned(), Ok(parse(text))))
                .collect(),
        }
    }

    #[test]
    fn the_exposition_parses_into_samples_with_their_labels() {
        let samples = parse(GATEWAY);
        assert_eq!(samples.len(), 8);
        assert_eq!(samples[0].name, "shipshape_http_requests_total");
        assert_eq!(samples[0].label("route"), Some("/api/v1/orders"));
        assert_eq!(samples[0].value, 90.0);
        assert_eq!(samples[5].value, 90.0);
        assert_eq!(samples[5].label("le"), Some("+Inf"));
        let escaped = parse(r#"m{a="x \"y\" \\ z",b="2"} 1.5"#);
        assert_eq!(escaped[0].label("a"), Some(r#"x "y" \ z"#));
        assert_eq!(escaped[0].label("b"), Some("2"));
        assert!(parse("garbage line\n# comment").is_empty());
    }

    #[test]
    fn the_first_reading_has_edges_but_no_rates() {
        let figures = figures(None, &reading(&[("gateway", GATEWAY)]));
        assert_eq!(figures.checkouts_per_sec, None);
        assert_eq!(figures.checkout_p99_ms, None);
        assert_eq!(
            figures.edges,
            [EdgeJson {
                process: "gateway".to_owned(),
                downstream: "order".to_owned(),
                breaker: "closed".to_owned(),
                bulkhead_in_use: 3.0,
            }]
        );
    }

    #[test]
    fn rates_and_the_p99_are_over_the_window_between_readings() {
        let before = reading(&[("gateway", GATEWAY)]);
        // 20 more checkouts in 2 s: 10 within 10 ms, 10 within 100 ms.
        let later = GATEWAY
            .replace(r#"status="202"} 90"#, r#"status="202"} 110"#)
            .replace(r#"le="0.01"} 40"#, r#"le="0.01"} 50"#)
            .replace(r#"le="0.1"} 90"#, r#"le="0.1"} 110"#)
            .replace(r#"le="+Inf"} 90"#, r#"le="+Inf"} 110"#);
        let now = reading(&[("gateway", &later)]);
        let figures = figures(Some((&before, Duration::from_secs(2))), &now);
        assert_eq!(figures.window_secs, Some(2.0));
        assert_eq!(figures.checkouts_per_sec, Some(10.0));
        // Rank 19.8 of 20: in the (0.01, 0.1] bucket, 9.8 of its 10.
        let p99 = figures.checkout_p99_ms.expect("a p99");
        assert!((p99 - (10.0 + 90.0 * 0.98)).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn breakers_outcomes_and_unreadable_processes_are_reported() {
        let payment = r#"shipshape_breaker_state{downstream="psp"} 1
shipshape_bulkhead_in_use{downstream="psp"} 0
"#;
        let order = r#"shipshape_saga_outcomes_total{status="CONFIRMED",reason="none"} 5
shipshape_saga_outcomes_total{status="CANCELLED",reason="payment_declined"} 1
"#;
        let order_later = order.replace(
            "reason=\"payment_declined\"} 1",
            "reason=\"payment_declined\"} 4",
        );
        let mut before = reading(&[("payment", payment), ("order", order)]);
        before
            .processes
            .push(("shipping".to_owned(), Err("refused".to_owned())));
        let mut now = reading(&[("payment", payment), ("order", &order_later)]);
        now.processes
            .push(("shipping".to_owned(), Err("refused".to_owned())));
        let figures = figures(Some((&before, Duration::from_secs(1))), &now);
        assert_eq!(figures.edges[0].breaker, "open");
        assert_eq!(figures.outcomes["payment_declined"], 3.0);
        assert_eq!(figures.outcomes["confirmed"], 0.0);
        assert_eq!(figures.processes[2].error.as_deref(), Some("refused"));
    }

    #[test]
    fn faults_are_checked_against_the_simulators_bounds() {
        let faults = |latency_ms, error_rate, lose_response_rate| FaultsJson {
            latency_ms,
            error_rate,
            lose_response_rate,
        };
        assert!(faults(60_000, 1.0, 0.0).check().is_ok());
        for bad in [
            faults(60_001, 0.0, 0.0),
            faults(0, 1.5, 0.0),
            faults(0, 0.0, -0.1),
            faults(0, f64::NAN, 0.0),
        ] {
            assert_eq!(
                bad.check().map_err(|e| e.code),
                Err("invalid_faults"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_process_read_only_now_adds_nothing_and_a_restart_counts_from_zero() {
        let mut before = reading(&[]);
        before
            .processes
            .push(("gateway".to_owned(), Err("refused".to_owned())));
        let now = reading(&[("gateway", GATEWAY)]);
        let unread_before = figures(Some((&before, Duration::from_secs(1))), &now);
        assert_eq!(unread_before.checkouts_per_sec, Some(0.0));
        assert_eq!(unread_before.checkout_p99_ms, None);

        let restarted = GATEWAY
            .replace(r#"status="202"} 90"#, r#"status="202"} 4"#)
            .replace(r#"status="400"} 10"#, r#"status="400"} 0"#);
        let before = reading(&[("gateway", GATEWAY)]);
        let now = reading(&[("gateway", &restarted)]);
        let after_restart = figures(Some((&before, Duration::from_secs(2))), &now);
        assert_eq!(after_restart.checkouts_per_sec, Some(2.0));
    }

    #[test]
    fn the_processes_setting_is_name_equals_url() {
        assert_eq!(
            parse_processes("gateway=http://127.0.0.1:9100/metrics, order=http://o:9101/metrics")
                .expect("valid"),
            [
                (
                    "gateway".to_owned(),
                    "http://127.0.0.1:9100/metrics".to_owned()
                ),
                ("order".to_owned(), "http://o:9101/metrics".to_owned()),
            ]
        );
        assert!(parse_processes("").expect("none").is_empty());
        assert!(parse_processes("order").is_err());
        assert!(parse_processes("=http://x").is_err());
    }
}
