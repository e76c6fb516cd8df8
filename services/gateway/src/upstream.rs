//! Connections to the services behind the gateway: lazily connected gRPC
//! channels with timeouts, and readiness checks for them.

use std::time::Duration;

use anyhow::Context;
use axum::http::Uri;
use shipshape_runtime::ops::CheckFuture;
use tonic::transport::{Channel, Endpoint};

/// How long establishing a connection may take. Separate from the call
/// timeout so an upstream that is down fails fast instead of using the whole
/// call budget.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a readiness probe waits for a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A channel to `url` that connects on first use (and reconnects after a
/// failure), so the gateway starts, and answers 503, while an upstream is
/// not up yet. Every call is bounded by `call_timeout`.
pub fn channel(url: &str, call_timeout: Duration) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("upstream URL {url:?} is invalid"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(call_timeout);
    Ok(endpoint.connect_lazy())
}

/// The host and port a URL such as `http://order:50051` points at; the
/// scheme's default port when it names none.
pub fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("upstream URL {url:?} is invalid"))?;
    let host = uri
        .host()
        .with_context(|| format!("upstream URL {url:?} has no host"))?;
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("https")) => 443,
        (None, Some("http")) => 80,
        (None, _) => anyhow::bail!("upstream URL {url:?} has no port"),
    };
    // `Uri::host` keeps the brackets of an IPv6 literal; a socket address
    // lookup wants the bare address.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), port))
}

/// A readiness check that passes when a TCP connection to the upstream can
/// be opened. It proves the service is listening without calling an RPC, so
/// probes add no load to the upstream's request path.
pub fn reachable(host: String, port: u16) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
    move || {
        let host = host.clone();
        Box::pin(async move {
            let connect = tokio::net::TcpStream::connect((host.as_str(), port));
            match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
                Err(_) => Err(format!(
                    "{host}:{port}: no connection within {} ms",
                    PROBE_TIMEOUT.as_millis()
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_come_from_the_url() {
        let parsed = |url: &str| host_port(url).expect(url);
        assert_eq!(parsed("http://order:50051"), ("order".to_owned(), 50051));
        assert_eq!(
            parsed("http://127.0.0.1:50052/"),
            ("127.0.0.1".to_owned(), 50052)
        );
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

    #[tokio::test]
    async fn reachable_reflects_whether_something_listens() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        assert_eq!(reachable("127.0.0.1".into(), port)().await, Ok(()));
        drop(listener);
        assert!(reachable("127.0.0.1".into(), port)().await.is_err());
    }
}
