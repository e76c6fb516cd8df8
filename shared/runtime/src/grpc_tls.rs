//! Mutual TLS between the gRPC servers and their clients, and who may call
//! what.
//!
//! Every process that serves or calls gRPC holds a certificate naming its
//! service (a DNS name, `gateway`, `order`, `inventory`), signed by the
//! deployment's CA, with its key ([`TlsFiles`]). A server asks every
//! caller for a certificate of that CA and refuses the handshake without
//! one; a client checks that the server's certificate names the service it
//! meant to call. Then [`CallerPolicy`] decides, per method, which services
//! may call it: a call from any other is refused with `PERMISSION_DENIED`
//! before its handler, and so before the identity metadata the gateway
//! forwards (`x-shipshape-subject`, `x-shipshape-scopes`) is read. That
//! metadata is believed only because of who sent it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::http::{Request, Response};
use rustls_pki_types::{CertificateDer, DnsName, ServerName};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};
use tower::{Layer, Service};

use crate::grpc_balance::{balanced_channel, split_urls};

/// Paths every peer with a certificate of the CA may call: health and
/// reflection say nothing about anyone's orders or stock.
const OPEN_TO_EVERY_PEER: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// One process's TLS material, PEM encoded: its certificate (presented as a
/// server and as a client), its private key, and the CA whose certificates
/// it accepts from peers.
#[derive(Clone)]
pub struct TlsFiles {
    certificate: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").finish_non_exhaustive()
    }
}

impl TlsFiles {
    pub fn from_pem(certificate: Vec<u8>, key: Vec<u8>, ca: Vec<u8>) -> Self {
        Self {
            certificate,
            key,
            ca,
        }
    }

    /// `GRPC_TLS_CERT`, `GRPC_TLS_KEY` and `GRPC_TLS_CA`: paths of PEM
    /// files (cert-manager's `tls.crt`, `tls.key` and `ca.crt`). All three
    /// or none; with none, gRPC runs without TLS, and a server believes
    /// whoever reaches its port.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let names = ["GRPC_TLS_CERT", "GRPC_TLS_KEY", "GRPC_TLS_CA"];
        let paths: Vec<Option<String>> = names.iter().map(|name| var(name)).collect();
        if paths.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut files = Vec::with_capacity(3);
        for (name, path) in names.iter().zip(paths) {
            let path = path.with_context(|| {
                format!(
                    "{name} is missing: set GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CA together"
                )
            })?;
            files.push(std::fs::read(&path).with_context(|| format!("reading {name}={path}"))?);
        }
        let [certificate, key, ca] = <[Vec<u8>; 3]>::try_from(files)
            .map_err(|_| anyhow::anyhow!("three TLS files were read"))?;
        Ok(Some(Self::from_pem(certificate, key, ca)))
    }

    /// A server that presents this certificate and requires every caller
    /// to present one signed by the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.certificate, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// A client that presents this certificate and accepts only a server
    /// whose certificate, signed by the CA, names `service`.
    pub fn client(&self, service: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .identity(Identity::from_pem(&self.certificate, &self.key))
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name(service)
    }
}

/// Fails unless every URL in `urls` fits whether the client speaks TLS:
/// `https://` with it, `http://` without. A mismatch would otherwise fail
/// every call with a transport error far from its cause.
fn check_scheme(variable: &str, urls: &[String], tls: bool) -> anyhow::Result<()> {
    let wanted = if tls { "https://" } else { "http://" };
    if let Some(url) = urls.iter().find(|url| !url.starts_with(wanted)) {
        if tls {
            bail!("{variable}: {url:?} must start with https:// when GRPC_TLS_CERT is set");
        }
        bail!("{variable}: {url:?} must start with http:// unless GRPC_TLS_CERT is set");
    }
    Ok(())
}

/// A channel to `service` at `urls` (the value of the setting `variable`:
/// one URL, or its replicas' comma separated, see
/// [`crate::grpc_balance`]), over mutual TLS when `tls` is given. It
/// connects on first use, each connection within `connect_timeout`.
pub fn channel(
    variable: &str,
    urls: &str,
    service: &str,
    tls: Option<&TlsFiles>,
    connect_timeout: Duration,
) -> anyhow::Result<Channel> {
    let urls = split_urls(urls).with_context(|| variable.to_owned())?;
    check_scheme(variable, &urls, tls.is_some())?;
    balanced_channel(&urls, |endpoint| {
        let endpoint = endpoint.connect_timeout(connect_timeout);
        match tls {
            Some(tls) => endpoint
                .tls_config(tls.client(service))
                .with_context(|| format!("{variable}: the TLS settings")),
            None => Ok(endpoint),
        }
    })
}

/// Who may call what on one gRPC server.
#[derive(Clone, Debug, Default)]
pub struct CallerPolicy {
    /// A method's path (`/package.Service/Method`) or a service's prefix
    /// (`/package.Service/`), with the services allowed to call it.
    rules: Vec<(String, Vec<String>)>,
}

impl CallerPolicy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `callers` call `path`: one method (`/package.Service/Method`)
    /// or every method of a service (`/package.Service/`). A method's own
    /// rule wins over its service's.
    pub fn allow(mut self, path: &str, callers: &[&str]) -> Self {
        self.rules.push((
            path.to_owned(),
            callers.iter().map(|caller| (*caller).to_owned()).collect(),
        ));
        self
    }

    /// The services that may call `path`; `None` when every peer may.
    /// A path no rule names is open to no one.
    fn allowed(&self, path: &str) -> Option<&[String]> {
        if OPEN_TO_EVERY_PEER.iter().any(|open| path.starts_with(open)) {
            return None;
        }
        let exact = self.rules.iter().find(|(rule, _)| rule == path);
        let by_service = || {
            self.rules
                .iter()
                .find(|(rule, _)| rule.ends_with('/') && path.starts_with(rule.as_str()))
        };
        Some(
            exact
                .or_else(by_service)
                .map(|(_, callers)| callers.as_slice())
                .unwrap_or(&[]),
        )
    }
}

/// The first of `candidates` that the certificate `leaf` names (as one of
/// its DNS names).
fn named_by<'a>(leaf: &CertificateDer<'_>, candidates: &'a [String]) -> Option<&'a str> {
    let certificate = webpki::EndEntityCert::try_from(leaf).ok()?;
    candidates
        .iter()
        .find(|candidate| {
            DnsName::try_from(candidate.as_str())
                .map(|name| {
                    certificate
                        .verify_is_valid_for_subject_name(&ServerName::DnsName(name))
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .map(String::as_str)
}

/// Refuses, with `PERMISSION_DENIED`, every call whose peer's certificate
/// names none of the services [`CallerPolicy`] allows on its method; lets
/// every call through without a policy (a server without TLS, which has
/// no certificates to check).
#[derive(Clone, Debug)]
pub(crate) struct CallerCheckLayer {
    pub(crate) policy: Option<Arc<CallerPolicy>>,
}

impl<S> Layer<S> for CallerCheckLayer {
    type Service = CallerCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerCheck {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct CallerCheck<S> {
    inner: S,
    policy: Option<Arc<CallerPolicy>>,
}

impl<S, B, ResBody> Service<Request<B>> for CallerCheck<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        if let Some(allowed) = self
            .policy
            .as_deref()
            .and_then(|policy| policy.allowed(path))
        {
            let certificates = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs);
            let caller = certificates
                .as_deref()
                .and_then(|chain| chain.first())
                .and_then(|leaf| named_by(leaf, allowed));
            if caller.is_none() {
                let refusal = Status::permission_denied(format!(
                    "the caller's certificate names none of the services that may call {path}"
                ));
                tracing::warn!(
                    path,
                    "gRPC call refused: the caller may not call this method"
                );
                return Box::pin(async move { Ok(refusal.into_http()) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_methods_own_rule_wins_over_its_services_and_unnamed_paths_are_closed() {
        let policy = CallerPolicy::new()
            .allow("/shop.Inventory/", &["gateway", "order"])
            .allow("/shop.Inventory/Restock", &["gateway"]);
        assert_eq!(
            policy.allowed("/shop.Inventory/Price"),
            Some(&["gateway".to_owned(), "order".to_owned()][..])
        );
        assert_eq!(
            policy.allowed("/shop.Inventory/Restock"),
            Some(&["gateway".to_owned()][..])
        );
        assert_eq!(policy.allowed("/shop.Orders/Create"), Some(&[][..]));
        assert_eq!(policy.allowed("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn urls_must_say_whether_they_speak_tls() {
        let urls = [
            "https://order:50051".to_owned(),
            "http://order-1:50051".to_owned(),
        ];
        let error = check_scheme("ORDER_URL", &urls, true).expect_err("mixed");
        assert!(error.to_string().contains("order-1"), "{error}");
        check_scheme("ORDER_URL", &urls[..1], true).expect("https with TLS");
        check_scheme("ORDER_URL", &urls[1..], false).expect("http without TLS");
        assert!(check_scheme("ORDER_URL", &urls[..1], false).is_err());
    }
}
