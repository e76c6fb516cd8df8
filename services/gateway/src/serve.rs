//! Serving the API over TCP, with limits on connections: how many are open
//! at once, overall and from one address, and how long one may take to send
//! a request's head. `axum::serve` has neither: it gives hyper no timer, so
//! a connection that sends nothing, or a header byte a second, is kept
//! forever, and 2,000 idle connections from one address were all kept.
//!
//! Every request must name one host ([`crate::host`]), and its head (the
//! request line and every header) must fit in [`MAX_HEAD_BYTES`]: a larger
//! one is answered `431 Request Header Fields Too Large` and the connection
//! closed, so no client makes the gateway buffer more than that before a
//! request even starts.
//!
//! A connection beyond a cap is closed as soon as it is accepted, before a
//! byte is read. Within the caps, hyper closes a connection that has not
//! sent a complete request head within [`ConnectionLimits::header_timeout`]
//! of opening or of its previous response: that bounds slowloris clients
//! and idle keep-alive connections alike.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use shipshape_runtime::CancellationToken;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::client::{Held, PerClient, address_key};
use crate::forwarded::{ClientAddress, TrustedProxies};
use crate::{host, http_metrics};

/// Pause after a failed `accept` that is not the peer's doing (out of file
/// descriptors, say): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The largest request head accepted: a bearer token of a few kilobytes
/// and the usual headers fit many times over. hyper would buffer about
/// 400 KB otherwise.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How many connections, and how slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: NonZeroUsize,
    /// Connections open at once from one address (an IPv6 /64).
    pub max_per_address: NonZeroUsize,
    /// Time to send a complete request head, from the connection's opening
    /// or its previous response.
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting and lets open connections finish their requests. Each request
/// carries `ConnectInfo<SocketAddr>`, the peer's address, and
/// [`ClientAddress`], the client's as `trusted` proxies name it. A trusted
/// proxy carries many clients, so its connections count only toward the
/// overall cap, not one address's.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    trusted: TrustedProxies,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let trusted = Arc::new(trusted);
    let open = Arc::new(Semaphore::new(
        limits.max_connections.get().min(Semaphore::MAX_PERMITS),
    ));
    let per_address = PerClient::new(limits.max_per_address);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The peer gave up before we took the connection: nothing
                // is wrong here.
                Err(error) if is_peers_doing(&error) => continue,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(connection) = open.clone().try_acquire_owned() else {
            refuse(stream, http_metrics::LIMIT_ALL);
            continue;
        };
        let address = if trusted.contains(peer.ip()) {
            None
        } else {
            let Some(address) = per_address.admit(address_key(peer.ip())) else {
                refuse(stream, http_metrics::LIMIT_ADDRESS);
                continue;
            };
            Some(address)
        };
        let router = router.clone();
        let trusted = trusted.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let router = router.clone();
            let client = ClientAddress(trusted.client_of(peer.ip(), request.headers()));
            async move {
                if let Err(refusal) = host::check(&request) {
                    return Ok::<_, Infallible>(refusal.into_response());
                }
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(client);
                router.oneshot(request.map(Body::new)).await
            }
        });
        let watched = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let open = OpenConnection::start(connection, address);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(%error, %peer, "connection ended");
            }
            drop(open);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding HTTP_ADDR {addr}"))
}

/// Whether a failed `accept` was the peer's doing (it reset or aborted the
/// connection), rather than ours (out of file descriptors, say).
fn is_peers_doing(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

fn refuse(stream: tokio::net::TcpStream, limit: &'static str) {
    metrics::counter!(http_metrics::CONNECTIONS_REFUSED, "limit" => limit).increment(1);
    tracing::debug!(limit, "connection refused: too many open");
    drop(stream);
}

/// An accepted connection's places under both caps (a trusted proxy's
/// under the overall one only), and the gauge.
struct OpenConnection {
    _connection: OwnedSemaphorePermit,
    _address: Option<Held<IpAddr>>,
}

impl OpenConnection {
    fn start(connection: OwnedSemaphorePermit, address: Option<Held<IpAddr>>) -> Self {
        metrics::gauge!(http_metrics::CONNECTIONS_OPEN).increment(1.0);
        Self {
            _connection: connection,
            _address: address,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(http_metrics::CONNECTIONS_OPEN).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::Extension;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn non_zero(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("non-zero")
    }

    /// A server on a free loopback port with these limits.
    async fn server(limits: ConnectionLimits) -> (SocketAddr, CancellationToken) {
        server_behind(limits, TrustedProxies::default()).await
    }

    /// The same, trusting `trusted`'s forwarded addresses; `GET /client`
    /// answers the client's address as the gateway counts it.
    async fn server_behind(
        limits: ConnectionLimits,
        trusted: TrustedProxies,
    ) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/", get(|| async { "ok" })).route(
            "/client",
            get(
                |Extension(ClientAddress(ip)): Extension<ClientAddress>| async move {
                    format!("client={ip}")
                },
            ),
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, router, limits, trusted, shutdown.clone()));
        (addr, shutdown)
    }

    /// A plain `GET /`, named by a host.
    const GET: &str = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    /// Sends `request` on `stream`; returns the start of the answer.
    async fn exchange(stream: &mut TcpStream, request: &str) -> String {
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = [0; 512];
        let n = stream.read(&mut answer).await.expect("read");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }

    /// Reads until the server closes the connection (or the test's bound).
    async fn closed_after(stream: &mut TcpStream) -> Option<Duration> {
        let started = Instant::now();
        let mut buffer = [0; 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        read.await.ok().map(|()| started.elapsed())
    }

    #[tokio::test]
    async fn idle_and_slow_header_connections_are_closed_after_the_header_timeout() {
        let limits = ConnectionLimits {
            max_connections: non_zero(100),
            max_per_address: non_zero(100),
            header_timeout: Duration::from_millis(300),
        };
        let (addr, shutdown) = server(limits).await;

        let mut idle = TcpStream::connect(addr).await.expect("connect");
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let trickle = async {
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\n" {
                if slow.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            closed_after(&mut slow).await
        };
        let (idle_closed, slow_closed) = tokio::join!(closed_after(&mut idle), trickle);
        let idle_closed = idle_closed.expect("the idle connection was closed");
        assert!(idle_closed < Duration::from_secs(2), "{idle_closed:?}");
        assert!(
            slow_closed.is_some(),
            "the slow header connection was closed"
        );

        // A prompt request is answered, and its connection kept alive
        // until it idles past the timeout.
        let mut prompt = TcpStream::connect(addr).await.expect("connect");
        let answer = exchange(&mut prompt, GET).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(closed_after(&mut prompt).await.is_some());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_request_without_one_host_is_refused_on_the_wire() {
        let limits = ConnectionLimits {
            max_connections: non_zero(100),
            max_per_address: non_zero(100),
            header_timeout: Duration::from_secs(30),
        };
        let (addr, shutdown) = server(limits).await;
        for head in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET http://elsewhere/ HTTP/1.1\r\nHost: shop\r\n\r\n",
        ] {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let answer = exchange(&mut stream, head).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
            assert!(answer.contains("invalid_host"), "{answer}");
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_request_head_over_the_limit_is_refused_with_431() {
        let limits = ConnectionLimits {
            max_connections: non_zero(100),
            max_per_address: non_zero(100),
            header_timeout: Duration::from_secs(30),
        };
        let (addr, shutdown) = server(limits).await;
        let start = "GET / HTTP/1.1\r\nHost: x\r\nX-Padding: ";
        let mut within = TcpStream::connect(addr).await.expect("connect");
        let head = format!("{start}{}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES / 2));
        let answer = exchange(&mut within, &head).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

        // A head that fills the limit and has not ended. Exactly the limit
        // is sent, so the server has read every byte when it answers: a
        // close with bytes still unread would reset the connection, and the
        // answer could be lost before the test reads it.
        let mut over = TcpStream::connect(addr).await.expect("connect");
        let head = format!("{start}{}", "a".repeat(MAX_HEAD_BYTES - start.len()));
        let answer = exchange(&mut over, &head).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
        assert!(
            closed_after(&mut over).await.is_some(),
            "closed after the 431"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn connections_beyond_an_address_cap_are_closed_at_once() {
        let limits = ConnectionLimits {
            max_connections: non_zero(100),
            max_per_address: non_zero(3),
            header_timeout: Duration::from_secs(30),
        };
        let (addr, shutdown) = server(limits).await;
        let mut kept = Vec::new();
        for _ in 0..3 {
            kept.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut refused = TcpStream::connect(addr).await.expect("connect");
        let closed = closed_after(&mut refused).await.expect("closed");
        assert!(closed < Duration::from_secs(1), "{closed:?}");

        // The kept ones still work.
        assert!(
            exchange(&mut kept[0], GET)
                .await
                .starts_with("HTTP/1.1 200")
        );

        // A place freed is a place taken again.
        drop(kept.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut again = TcpStream::connect(addr).await.expect("connect");
        assert!(exchange(&mut again, GET).await.starts_with("HTTP/1.1 200"));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn behind_a_trusted_proxy_clients_are_told_apart_and_the_proxy_is_not_capped() {
        let limits = ConnectionLimits {
            max_connections: non_zero(100),
            max_per_address: non_zero(1),
            header_timeout: Duration::from_secs(30),
        };
        // The whole answer: the connection closes after it.
        let client_seen = async |stream: &mut TcpStream, forwarded: &str| {
            let request = format!(
                "GET /client HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {forwarded}\r\n\
                 Connection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("read");
            answer
        };

        // Not trusted: the header is the client's word, and is ignored.
        let (addr, shutdown) = server(limits).await;
        let mut direct = TcpStream::connect(addr).await.expect("connect");
        let answer = client_seen(&mut direct, "203.0.113.9").await;
        assert!(answer.ends_with("client=127.0.0.1"), "{answer:?}");
        shutdown.cancel();

        // Trusted (the test's connections come from 127.0.0.1): the hop the
        // proxy added, over connections beyond one address's cap.
        let trusted = "127.0.0.0/8".parse().expect("valid");
        let (addr, shutdown) = server_behind(limits, trusted).await;
        let mut first = TcpStream::connect(addr).await.expect("connect");
        let mut second = TcpStream::connect(addr).await.expect("connect");
        let answer = client_seen(&mut first, "198.51.100.1, 203.0.113.9").await;
        assert!(answer.ends_with("client=203.0.113.9"), "{answer:?}");
        let answer = client_seen(&mut second, "203.0.113.10").await;
        assert!(answer.ends_with("client=203.0.113.10"), "{answer:?}");
        shutdown.cancel();
    }
}
