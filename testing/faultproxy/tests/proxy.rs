//! The proxy against a real echo server on loopback: each fault is checked
//! from the client's side, the way the services will see it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use shipshape_faultproxy::{Fault, FaultControl, FaultProxy, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// No test may take longer than this, whatever the proxy does.
const TEST_LIMIT: Duration = Duration::from_secs(10);

/// How long a read waits before a blackhole counts as silent.
const SILENCE: Duration = Duration::from_millis(300);

/// How long a closed connection may take to show it.
const PROMPTLY: Duration = Duration::from_secs(2);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn bounded<F: Future>(test: F) -> F::Output {
    timeout(TEST_LIMIT, test).await.expect("test took too long")
}

/// An upstream that writes back whatever it reads, on every connection.
async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(loopback())
        .await
        .expect("bind echo server");
    let addr = listener.local_addr().expect("echo server address");
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                // A connection the proxy resets ends this copy with an error.
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    (addr, server)
}

async fn proxied_echo() -> (FaultProxy, JoinHandle<()>) {
    let (echo, server) = echo_server().await;
    let proxy = FaultProxy::start(loopback(), echo)
        .await
        .expect("start proxy");
    (proxy, server)
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect to proxy")
}

/// Sends `message` and expects it back unchanged.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.expect("write");
    let mut echoed = vec![0; message.len()];
    timeout(PROMPTLY, stream.read_exact(&mut echoed))
        .await
        .expect("echo arrives")
        .expect("read echo");
    assert_eq!(echoed, message);
}

/// What the next read returns: bytes, end of stream (`Ok(0)`) or an error.
async fn read_once(stream: &mut TcpStream, within: Duration) -> Option<io::Result<usize>> {
    let mut buf = [0; 64];
    timeout(within, stream.read(&mut buf)).await.ok()
}

/// Waits until the proxy's counters satisfy `check`; counters move just
/// after the bytes do, so a test cannot read them at the same instant.
async fn stats_until(control: &FaultControl, check: impl Fn(&Stats) -> bool) -> Stats {
    loop {
        let stats = control.stats();
        if check(&stats) {
            return stats;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn passes_bytes_both_ways_and_counts_them() {
    bounded(async {
        let (proxy, _echo) = proxied_echo().await;
        let control = proxy.control();
        let mut client = connect(&proxy).await;
        round_trip(&mut client, b"hello").await;
        round_trip(&mut client, b"again").await;

        let stats = stats_until(&control, |s| s.bytes_to_client == 10).await;
        assert_eq!(stats.accepted, 1);
        assert_eq!(stats.open, 1);
        assert_eq!(stats.bytes_to_upstream, 10);

        drop(client);
        stats_until(&control, |s| s.open == 0).await;
    })
    .await;
}

#[tokio::test]
async fn accepts_a_host_and_port_upstream() {
    bounded(async {
        let (echo, _server) = echo_server().await;
        let upstream = format!("127.0.0.1:{}", echo.port());
        let proxy = FaultProxy::start(loopback(), upstream)
            .await
            .expect("start proxy");
        round_trip(&mut connect(&proxy).await, b"by name").await;
    })
    .await;
}

/// The upper bounds here are what a wrong proxy would cost, not what the
/// machine is expected to take: a chunk delayed twice in one direction
/// takes a whole latency more, and chunks delayed one after another take a
/// latency each. Their margins are a whole latency, so it is long enough to
/// dwarf the scheduling noise of a machine busy with other tests' stacks.
/// (Real sockets rule out paused time: with nothing to run, the clock would
/// jump ahead while loopback bytes are in flight.)
#[tokio::test]
async fn latency_delays_each_chunk_once_in_each_direction() {
    bounded(async {
        let latency = Duration::from_millis(300);
        let (proxy, _echo) = proxied_echo().await;
        proxy.control().set(Fault::Latency(latency));
        let mut client = connect(&proxy).await;

        let started = Instant::now();
        round_trip(&mut client, b"ping").await;
        let elapsed = started.elapsed();
        assert!(elapsed >= 2 * latency, "one round trip took {elapsed:?}");
        assert!(
            elapsed < 3 * latency,
            "one round trip took {elapsed:?}: delayed more than once each way"
        );

        // Separate writes a little apart, so they travel as separate chunks.
        let chunks = 20;
        let gap = Duration::from_millis(5);
        let mut sent = Vec::new();
        let started = Instant::now();
        let (mut reader, mut writer) = client.split();
        let write = async {
            for i in 0..chunks {
                let chunk = format!("chunk {i:02};");
                writer
                    .write_all(chunk.as_bytes())
                    .await
                    .expect("write chunk");
                sent.extend_from_slice(chunk.as_bytes());
                sleep(gap).await;
            }
            // When the last chunk was written, as this run went.
            started.elapsed()
        };
        let mut echoed = vec![0; chunks * "chunk 00;".len()];
        let read = reader.read_exact(&mut echoed);
        let (written, read) = tokio::join!(write, read);
        read.expect("read all chunks");
        let elapsed = started.elapsed();

        assert_eq!(echoed, sent, "chunks arrive in order");
        assert!(elapsed >= 2 * latency, "pipelined chunks took {elapsed:?}");
        // Each chunk once each way, from when it was read: the last one is
        // back two latencies after it was written, less than three.
        let bound = written + 3 * latency;
        assert!(
            elapsed < bound,
            "pipelined chunks took {elapsed:?}, written in {written:?}, over {bound:?}"
        );
        // Pipelined: chunks delayed one after another would take a latency
        // each in one direction alone.
        assert!(
            elapsed < latency * chunks as u32,
            "chunks were delayed one after another: {elapsed:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn drop_closes_existing_connections_and_new_ones_at_once() {
    bounded(async {
        let (proxy, _echo) = proxied_echo().await;
        let mut existing = connect(&proxy).await;
        round_trip(&mut existing, b"before").await;

        proxy.control().set(Fault::Drop);
        let read = read_once(&mut existing, PROMPTLY)
            .await
            .expect("existing connection closes");
        assert_eq!(read.expect("a graceful close, not an error"), 0);

        let mut new = connect(&proxy).await;
        let read = read_once(&mut new, PROMPTLY)
            .await
            .expect("new connection closes");
        assert_eq!(read.expect("a graceful close, not an error"), 0);
        stats_until(&proxy.control(), |s| s.open == 0).await;
    })
    .await;
}

#[tokio::test]
async fn reset_aborts_existing_connections_and_new_ones() {
    bounded(async {
        let (proxy, _echo) = proxied_echo().await;
        let mut existing = connect(&proxy).await;
        round_trip(&mut existing, b"before").await;

        proxy.control().set(Fault::Reset);
        let read = read_once(&mut existing, PROMPTLY)
            .await
            .expect("existing connection ends");
        let error = read.expect_err("a reset, not a graceful close");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);

        // The handshake may complete before the proxy resets, or not at all.
        if let Ok(mut new) = TcpStream::connect(proxy.local_addr()).await {
            let read = read_once(&mut new, PROMPTLY)
                .await
                .expect("new connection ends");
            assert!(read.is_err(), "a reset, not {read:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn blackhole_accepts_but_forwards_nothing_until_cleared() {
    bounded(async {
        let (proxy, _echo) = proxied_echo().await;
        let control = proxy.control();
        let mut existing = connect(&proxy).await;
        round_trip(&mut existing, b"before").await;

        control.set(Fault::Blackhole);
        existing
            .write_all(b"held")
            .await
            .expect("write into the blackhole");
        assert!(
            read_once(&mut existing, SILENCE).await.is_none(),
            "existing connection hears nothing"
        );

        let mut new = connect(&proxy).await;
        new.write_all(b"also held")
            .await
            .expect("write into the blackhole");
        assert!(
            read_once(&mut new, SILENCE).await.is_none(),
            "new connection hears nothing"
        );
        assert_eq!(
            control.stats().bytes_to_upstream,
            6,
            "only the bytes sent before"
        );

        control.clear();
        round_trip(&mut connect(&proxy).await, b"after").await;

        // Held bytes were delayed, not lost.
        let mut echoed = [0; 4];
        existing
            .read_exact(&mut echoed)
            .await
            .expect("held bytes arrive");
        assert_eq!(&echoed, b"held");
        let mut echoed = [0; 9];
        new.read_exact(&mut echoed)
            .await
            .expect("held bytes arrive");
        assert_eq!(&echoed, b"also held");
    })
    .await;
}

#[tokio::test]
async fn clearing_any_fault_restores_pass_through_for_new_connections() {
    bounded(async {
        let (proxy, _echo) = proxied_echo().await;
        let control = proxy.control();
        let latency = Duration::from_secs(1);
        let faults = [
            Fault::Latency(latency),
            Fault::Drop,
            Fault::Reset,
            Fault::Blackhole,
        ];
        for fault in faults {
            control.set(fault);
            assert_eq!(control.fault(), fault);
            control.clear();
            assert_eq!(control.fault(), Fault::None);
            // A fault left behind would fail the round trip (drop, reset),
            // hold it past `PROMPTLY` (blackhole) or take twice the latency:
            // under one latency tells pass-through apart from all of them,
            // where 500 ms measured the machine beside other tests' stacks.
            let started = Instant::now();
            round_trip(&mut connect(&proxy).await, b"clear").await;
            let elapsed = started.elapsed();
            assert!(elapsed < latency, "after {fault:?}: {elapsed:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn client_is_closed_when_the_upstream_refuses() {
    bounded(async {
        let gone = TcpListener::bind(loopback()).await.expect("bind");
        let upstream = gone.local_addr().expect("address");
        drop(gone);
        let proxy = FaultProxy::start(loopback(), upstream)
            .await
            .expect("start proxy");

        let mut client = connect(&proxy).await;
        let read = read_once(&mut client, PROMPTLY)
            .await
            .expect("client is not left hanging");
        assert!(
            !matches!(read, Ok(n) if n > 0),
            "no bytes from nowhere: {read:?}"
        );
        stats_until(&proxy.control(), |s| s.accepted == 1 && s.open == 0).await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_every_connection() {
    bounded(async {
        let (proxy, _echo) = proxied_echo().await;
        let addr = proxy.local_addr();
        let control = proxy.control();
        let mut existing = connect(&proxy).await;
        round_trip(&mut existing, b"before").await;

        proxy.shutdown().await;
        let read = read_once(&mut existing, PROMPTLY)
            .await
            .expect("existing connection ends");
        assert!(
            !matches!(read, Ok(n) if n > 0),
            "nothing after shutdown: {read:?}"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener is closed"
        );
        assert_eq!(control.stats().open, 0);
    })
    .await;
}

#[tokio::test]
async fn dropping_the_proxy_stops_it() {
    bounded(async {
        let (proxy, _echo) = proxied_echo().await;
        let addr = proxy.local_addr();
        let mut existing = connect(&proxy).await;
        round_trip(&mut existing, b"before").await;

        drop(proxy);
        let read = read_once(&mut existing, PROMPTLY)
            .await
            .expect("existing connection ends");
        assert!(
            !matches!(read, Ok(n) if n > 0),
            "nothing after drop: {read:?}"
        );
        while TcpStream::connect(addr).await.is_ok() {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
