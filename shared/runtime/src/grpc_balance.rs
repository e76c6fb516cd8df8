//! gRPC client channels over every replica of a service.
//!
//! A service's URL setting (`ORDER_URL`, `INVENTORY_URL`, ...) may list
//! several replicas, comma-separated:
//! `http://10.0.0.5:50051,http://10.0.0.6:50051`. [`split_urls`] reads such a
//! list and [`balanced_channel`] makes one [`Channel`] over it.
//!
//! With one URL the channel is the plain lazily connected one every client
//! used before replicas could be listed: nothing is balanced or watched.
//!
//! With several, calls are spread over the replicas by tonic's balancer
//! (tower's power-of-two-choices; tonic reports the same load for every
//! connection, so each call goes to a random replica). That balancer never
//! drops a replica by itself: a lazily connected endpoint whose connection
//! failed still reports itself ready and hands the failure to the next call
//! routed to it (tonic 0.14 `transport::channel::service::reconnect`; see
//! tonic issue #643, "client still requests the unavailable service when
//! using balance channel"). A replica that went away would keep getting its
//! share of calls, each failing. So a background task probes every replica
//! once a second (a TCP connect, as readiness checks do) and takes a replica
//! out of the balancer while it does not accept connections, putting it back
//! once it does.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use axum::http::Uri;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

/// How often every replica is probed: about how long calls keep going to a
/// replica after it stopped accepting connections (times
/// [`FAILED_PROBES_TO_REMOVE`]), and how soon one that came back gets calls.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a probe waits for a TCP connection. Well under the interval, so
/// one round of probes has ended before the next is due.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Consecutive failed probes after which a replica is taken out of the
/// balancer. More than one, so a single slow accept on a busy but healthy
/// replica does not shift its calls onto the others.
const FAILED_PROBES_TO_REMOVE: u32 = 2;

/// The URLs in `list`, a comma-separated list of one or more gRPC URLs (as
/// `ORDER_URL` and the like are given), each trimmed of surrounding
/// whitespace. An empty entry (`a,,b`, a trailing comma) or a URL named twice
/// is refused: both are typing mistakes, and a repeated replica would get
/// twice the calls of the others.
pub fn split_urls(list: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = list.split(',').map(|url| url.trim().to_owned()).collect();
    if urls.iter().any(String::is_empty) {
        bail!("URL list {list:?} has an empty entry");
    }
    for (index, url) in urls.iter().enumerate() {
        if urls[..index].contains(url) {
            bail!("URL list {list:?} names {url:?} more than once");
        }
    }
    Ok(urls)
}

/// A channel over the replicas at `urls`, each endpoint set up by
/// `configure` (timeouts, keepalives, concurrency limits: whatever a client
/// sets applies to the connection to every replica).
///
/// Nothing connects yet: each replica is connected on first use, and again
/// after a failure, so a client starts while its servers are down.
///
/// With one URL this is `configure(endpoint).connect_lazy()`, as before
/// replicas could be listed. With several, calls are balanced over the
/// replicas that accept connections (see the module documentation); a
/// background task, which ends when the last clone of the channel is
/// dropped, keeps that set current. When no replica accepts connections,
/// calls go to all of them and fail at once, as with one URL, rather than
/// wait for a replica until their timeout.
///
/// Must be called within a Tokio runtime (as `connect_lazy` must). Several
/// URLs must each name a host and port (`http://` or `https://`), which the
/// probes connect to.
pub fn balanced_channel(
    urls: &[String],
    configure: impl Fn(Endpoint) -> anyhow::Result<Endpoint>,
) -> anyhow::Result<Channel> {
    let mut endpoints = urls
        .iter()
        .map(|url| -> anyhow::Result<Endpoint> {
            let endpoint = Endpoint::from_shared(url.clone())
                .with_context(|| format!("gRPC URL {url:?} is invalid"))?;
            configure(endpoint)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if endpoints.len() > 1 {
        let targets = urls
            .iter()
            .map(String::as_str)
            .map(host_port)
            .collect::<anyhow::Result<Vec<_>>>()?;
        return watched_balance(endpoints, targets);
    }
    let endpoint = endpoints.pop().context("no gRPC URL given")?;
    Ok(endpoint.connect_lazy())
}

/// The host and port a URL such as `http://order:50051` points at; the
/// scheme's default port when it names none.
pub fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("gRPC URL {url:?} is invalid"))?;
    let host = uri
        .host()
        .with_context(|| format!("gRPC URL {url:?} has no host"))?;
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("https")) => 443,
        (None, Some("http")) => 80,
        (None, _) => bail!("gRPC URL {url:?} has no port"),
    };
    // `Uri::host` keeps the brackets of an IPv6 literal; a socket address
    // lookup wants the bare address.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), port))
}

/// A balanced channel holding every endpoint, and the task that keeps it to
/// the replicas accepting connections. `targets[i]` is where `endpoints[i]`
/// is probed.
fn watched_balance(
    endpoints: Vec<Endpoint>,
    targets: Vec<(String, u16)>,
) -> anyhow::Result<Channel> {
    // Room for a change to every replica at once: the inserts below fit
    // without waiting. Later changes wait for room if need be.
    let (channel, changes) = Channel::balance_channel::<usize>(endpoints.len());
    // Every replica starts in the balancer, so calls made before the first
    // probes have answered have somewhere to go.
    for (index, endpoint) in endpoints.iter().enumerate() {
        changes
            .try_send(Change::Insert(index, endpoint.clone()))
            .map_err(|_| anyhow!("the balancer stopped before its replicas were added"))?;
    }
    let probe = move |index: usize| {
        let target = targets.get(index).cloned();
        async move {
            match target {
                Some((host, port)) => tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .is_ok(),
                None => false,
            }
        }
    };
    tokio::spawn(watch(endpoints, probe, changes));
    Ok(channel)
}

/// Probes the replicas once per [`PROBE_INTERVAL`] with `probe` (which
/// answers whether replica `i` accepts a connection; [`PROBE_TIMEOUT`] bounds
/// it) and sends `changes` the balancer needs to hold the replicas that do.
/// Ends when the balancer is gone: dropped with the last clone of its
/// channel, it closes `changes`.
async fn watch<P, F>(endpoints: Vec<Endpoint>, probe: P, changes: Sender<Change<usize, Endpoint>>)
where
    P: Fn(usize) -> F,
    F: Future<Output = bool> + Send + 'static,
{
    let mut membership = Membership::new(endpoints.len());
    let mut rounds = tokio::time::interval(PROBE_INTERVAL);
    // A round delayed by slow probes shifts the later ones rather than
    // catching up with a burst of rounds.
    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = changes.closed() => return,
            _ = rounds.tick() => {}
        }
        let accepting = probe_round(endpoints.len(), &probe).await;
        for change in membership.observe(&accepting) {
            let change = match change {
                MembershipChange::Insert(index) => {
                    let endpoint = &endpoints[index];
                    tracing::info!(
                        url = %endpoint.uri(),
                        accepting = accepting[index],
                        "gRPC replica back in the balancer"
                    );
                    Change::Insert(index, endpoint.clone())
                }
                MembershipChange::Remove(index) => {
                    tracing::warn!(
                        url = %endpoints[index].uri(),
                        failed_probes = FAILED_PROBES_TO_REMOVE,
                        "gRPC replica does not accept connections; no calls go to it until it does"
                    );
                    Change::Remove(index)
                }
            };
            if changes.send(change).await.is_err() {
                return;
            }
        }
    }
}

/// Whether each of `count` replicas accepted a connection: `probe(i)` for
/// every replica at once, so one that hangs delays the round by at most
/// [`PROBE_TIMEOUT`]. A probe that timed out or panicked counts as refused.
async fn probe_round<P, F>(count: usize, probe: &P) -> Vec<bool>
where
    P: Fn(usize) -> F,
    F: Future<Output = bool> + Send + 'static,
{
    let mut probes = JoinSet::new();
    for index in 0..count {
        let attempt = tokio::time::timeout(PROBE_TIMEOUT, probe(index));
        probes.spawn(async move { (index, attempt.await.unwrap_or(false)) });
    }
    let mut accepting = vec![false; count];
    while let Some(joined) = probes.join_next().await {
        if let Ok((index, true)) = joined
            && let Some(slot) = accepting.get_mut(index)
        {
            *slot = true;
        }
    }
    accepting
}

/// Which replicas the balancer should hold, decided from rounds of probes.
/// Pure: it is told what the probes found and answers what to change.
///
/// A replica is *up* until [`FAILED_PROBES_TO_REMOVE`] probes in a row have
/// failed, and up again after one succeeds. The balancer holds the replicas
/// that are up; when none is, it holds all of them, because a balancer with
/// no replica makes calls wait (until their timeout) instead of failing, and
/// a failing call is what callers, their retries and breakers expect of a
/// service that is down.
#[derive(Debug)]
struct Membership {
    replicas: Vec<Replica>,
}

#[derive(Clone, Copy, Debug)]
struct Replica {
    /// Probes failed in a row, up to the latest.
    failed_probes: u32,
    /// Whether the balancer holds the replica.
    balanced: bool,
}

impl Replica {
    fn is_up(self) -> bool {
        self.failed_probes < FAILED_PROBES_TO_REMOVE
    }
}

/// A change to send the balancer, naming a replica by its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MembershipChange {
    Insert(usize),
    Remove(usize),
}

impl Membership {
    /// `count` replicas, all up and in the balancer.
    fn new(count: usize) -> Self {
        let replica = Replica {
            failed_probes: 0,
            balanced: true,
        };
        Self {
            replicas: vec![replica; count],
        }
    }

    /// Takes one round of probes (`accepting[i]`: whether replica `i`
    /// accepted a connection) and answers the changes that bring the
    /// balancer up to date: inserts first, so that it is never left empty
    /// between two changes.
    fn observe(&mut self, accepting: &[bool]) -> Vec<MembershipChange> {
        debug_assert_eq!(accepting.len(), self.replicas.len());
        for (replica, &accepted) in self.replicas.iter_mut().zip(accepting) {
            replica.failed_probes = if accepted {
                0
            } else {
                replica.failed_probes.saturating_add(1)
            };
        }
        let any_up = self.replicas.iter().any(|replica| replica.is_up());
        let mut inserts = Vec::new();
        let mut removes = Vec::new();
        for (index, replica) in self.replicas.iter_mut().enumerate() {
            let wanted = replica.is_up() || !any_up;
            match (wanted, replica.balanced) {
                (true, false) => inserts.push(MembershipChange::Insert(index)),
                (false, true) => removes.push(MembershipChange::Remove(index)),
                _ => {}
            }
            replica.balanced = wanted;
        }
        inserts.extend(removes);
        inserts
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::mpsc::Receiver;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    use super::MembershipChange::{Insert, Remove};
    use super::*;

    const NO_CHANGE: [MembershipChange; 0] = [];

    #[test]
    fn a_url_list_is_split_at_commas_and_trimmed() {
        assert_eq!(
            split_urls("http://order:50051").expect("one URL"),
            ["http://order:50051"]
        );
        assert_eq!(
            split_urls(" http://127.0.0.1:50051 , http://127.0.0.1:50061").expect("two URLs"),
            ["http://127.0.0.1:50051", "http://127.0.0.1:50061"]
        );
        for typo in ["", "http://a:1,", "http://a:1,,http://b:1", ",http://a:1"] {
            assert!(split_urls(typo).is_err(), "{typo:?}");
        }
        assert!(split_urls("http://a:1,http://b:1, http://a:1").is_err());
    }

    #[test]
    fn host_and_port_come_from_the_url() {
        let parsed = |url: &str| host_port(url).expect(url);
        assert_eq!(parsed("http://order:50051"), ("order".to_owned(), 50051));
        assert_eq!(parsed("http://[::1]:50051"), ("::1".to_owned(), 50051));
        assert_eq!(
            parsed("https://order.example"),
            ("order.example".to_owned(), 443)
        );
        assert_eq!(
            parsed("http://order.example"),
            ("order.example".to_owned(), 80)
        );
        assert!(host_port("not a url").is_err());
        assert!(host_port("/just/a/path").is_err());
    }

    #[test]
    fn replicas_that_keep_accepting_change_nothing() {
        let mut membership = Membership::new(3);
        for _ in 0..5 {
            assert_eq!(membership.observe(&[true, true, true]), NO_CHANGE);
        }
    }

    #[test]
    fn a_replica_is_removed_after_consecutive_failed_probes_only() {
        let mut membership = Membership::new(2);
        // Failures with a success between them are no outage.
        for _ in 0..3 {
            assert_eq!(membership.observe(&[true, false]), NO_CHANGE);
            assert_eq!(membership.observe(&[true, true]), NO_CHANGE);
        }
        for _ in 1..FAILED_PROBES_TO_REMOVE {
            assert_eq!(membership.observe(&[true, false]), NO_CHANGE);
        }
        assert_eq!(membership.observe(&[true, false]), [Remove(1)]);
        // Removed once, not again on every failing round.
        assert_eq!(membership.observe(&[true, false]), NO_CHANGE);
    }

    #[test]
    fn a_removed_replica_is_put_back_once_it_accepts() {
        let mut membership = Membership::new(2);
        for _ in 0..FAILED_PROBES_TO_REMOVE {
            membership.observe(&[false, true]);
        }
        assert_eq!(membership.observe(&[true, true]), [Insert(0)]);
        assert_eq!(membership.observe(&[true, true]), NO_CHANGE);
    }

    #[test]
    fn with_no_replica_up_the_balancer_holds_them_all() {
        let mut membership = Membership::new(3);
        for _ in 0..FAILED_PROBES_TO_REMOVE {
            membership.observe(&[true, false, false]);
        }
        // The last one goes down too: the others come back rather than
        // leave the balancer empty.
        let mut changes = Vec::new();
        for _ in 0..FAILED_PROBES_TO_REMOVE {
            changes.extend(membership.observe(&[false, false, false]));
        }
        assert_eq!(changes, [Insert(1), Insert(2)]);
        assert_eq!(membership.observe(&[false, false, false]), NO_CHANGE);
        // One comes back: the balancer holds only it again.
        assert_eq!(
            membership.observe(&[false, true, false]),
            [Remove(0), Remove(2)]
        );
    }

    #[test]
    fn inserts_come_before_removes() {
        let mut membership = Membership::new(2);
        for _ in 0..FAILED_PROBES_TO_REMOVE {
            membership.observe(&[true, false]);
        }
        for _ in 1..FAILED_PROBES_TO_REMOVE {
            assert_eq!(membership.observe(&[false, false]), NO_CHANGE);
        }
        // Replica 0 goes down in the round replica 1 comes back: the
        // balancer gains one before it loses the other.
        assert_eq!(membership.observe(&[false, true]), [Insert(1), Remove(0)]);
    }

    #[test]
    fn a_single_replica_is_never_removed() {
        let mut membership = Membership::new(1);
        for accepted in [false, false, false, true, false] {
            assert_eq!(membership.observe(&[accepted]), NO_CHANGE);
        }
    }

    /// What a fake replica does with a probe's connection.
    #[derive(Clone, Copy, Debug)]
    enum Fake {
        Accepts,
        Refuses,
        Hangs,
    }

    type Fakes = Arc<Mutex<Vec<Fake>>>;
    type Changes = Receiver<Change<usize, Endpoint>>;

    /// A watcher over fake replicas behaving as `fakes` says (changeable
    /// while it runs), and the receiving end of its changes.
    fn watch_fakes(fakes: &[Fake]) -> (Fakes, Changes, JoinHandle<()>) {
        let count = fakes.len();
        let fakes: Fakes = Arc::new(Mutex::new(fakes.to_vec()));
        let endpoints = (0..count)
            .map(|index| Endpoint::from_shared(format!("http://127.0.0.1:{}", 50051 + index)))
            .collect::<Result<Vec<_>, _>>()
            .expect("valid URLs");
        let (changes, received) = tokio::sync::mpsc::channel(8);
        let probed = fakes.clone();
        let probe = move |index: usize| {
            let fake = probed.lock().expect("not poisoned")[index];
            async move {
                match fake {
                    Fake::Accepts => true,
                    Fake::Refuses => false,
                    Fake::Hangs => std::future::pending().await,
                }
            }
        };
        let watcher = tokio::spawn(watch(endpoints, probe, changes));
        (fakes, received, watcher)
    }

    fn set(fakes: &Fakes, index: usize, fake: Fake) {
        fakes.lock().expect("not poisoned")[index] = fake;
    }

    async fn next_change(received: &mut Changes) -> MembershipChange {
        match received.recv().await.expect("the watcher runs") {
            Change::Insert(index, _) => Insert(index),
            Change::Remove(index) => Remove(index),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_replica_is_removed_within_the_probe_rounds_and_returns() {
        let (fakes, mut received, _watcher) = watch_fakes(&[Fake::Accepts, Fake::Refuses]);
        let started = Instant::now();
        assert_eq!(next_change(&mut received).await, Remove(1));
        // Rounds run at 0 s, 1 s, ...: the last needed failure is in round
        // FAILED_PROBES_TO_REMOVE, and a refusal answers at once.
        let removed_after = PROBE_INTERVAL * (FAILED_PROBES_TO_REMOVE - 1);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= removed_after && elapsed < removed_after + PROBE_TIMEOUT,
            "{elapsed:?}"
        );

        set(&fakes, 1, Fake::Accepts);
        let back = Instant::now();
        assert_eq!(next_change(&mut received).await, Insert(1));
        assert!(back.elapsed() <= PROBE_INTERVAL, "{:?}", back.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_never_answers_counts_as_refusing() {
        let (_fakes, mut received, _watcher) = watch_fakes(&[Fake::Hangs, Fake::Accepts]);
        let started = Instant::now();
        assert_eq!(next_change(&mut received).await, Remove(0));
        // Each of its probes gives up after PROBE_TIMEOUT, which ends the
        // round before the next is due.
        let removed_after = PROBE_INTERVAL * (FAILED_PROBES_TO_REMOVE - 1) + PROBE_TIMEOUT;
        let elapsed = started.elapsed();
        assert!(
            elapsed >= removed_after && elapsed < PROBE_INTERVAL * FAILED_PROBES_TO_REMOVE,
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_replica_down_none_is_removed_until_one_returns() {
        let (fakes, mut received, _watcher) = watch_fakes(&[Fake::Refuses, Fake::Refuses]);
        let quiet = tokio::time::timeout(10 * PROBE_INTERVAL, received.recv()).await;
        assert!(quiet.is_err(), "no change while all are down: {quiet:?}");

        set(&fakes, 1, Fake::Accepts);
        assert_eq!(next_change(&mut received).await, Remove(0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_ends_with_the_balancer() {
        let (_fakes, received, watcher) = watch_fakes(&[Fake::Accepts, Fake::Refuses]);
        drop(received);
        let ended = tokio::time::timeout(2 * PROBE_INTERVAL, watcher).await;
        assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    }

    #[tokio::test]
    async fn one_url_or_several_make_a_channel_and_bad_ones_do_not() {
        let one = ["http://127.0.0.1:1".to_owned()];
        assert!(balanced_channel(&one, Ok).is_ok());
        let two = [
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ];
        let configured = balanced_channel(&two, |endpoint| {
            Ok(endpoint.connect_timeout(Duration::from_millis(100)))
        });
        assert!(configured.is_ok());
        assert!(balanced_channel(&[], Ok).is_err());
        assert!(balanced_channel(&["not a url".to_owned()], Ok).is_err());
        // A replica in a list must have an address to probe.
        let socket = [
            "http://127.0.0.1:1".to_owned(),
            "unix:/tmp/grpc.sock".to_owned(),
        ];
        assert!(balanced_channel(&socket, Ok).is_err());
    }
}
