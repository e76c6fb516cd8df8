//! Who may use the `/admin` routes: they rewrite the faults every payment
//! meets and list every card token charged, so they answer callers on a
//! loopback address (the test kit, a port-forward), and others only when
//! they present `Authorization: Bearer <PSP_ADMIN_TOKEN>`.
//!
//! The peer address comes from the socket ([`ConnectInfo`], which
//! [`run`](crate::run) provides); a request without one, such as a test's
//! call of the router, is not taken to be local, so it needs the token too
//! (or a [`MockConnectInfo`] that says where it is from).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use crate::{Error, Psp};

/// The secret that opens the `/admin` routes to callers that are not on a
/// loopback address (`PSP_ADMIN_TOKEN`). Its `Debug` never shows it, so a
/// logged [`Config`](crate::Config) cannot leak it.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// `None` for an empty token, which would otherwise open the routes to
    /// anyone sending `Authorization: Bearer ` with nothing after it.
    pub fn new(token: &str) -> Option<Self> {
        (!token.is_empty()).then(|| Self(Arc::from(token)))
    }

    /// Whether `presented` is the token, taking as long whatever it is, so
    /// that the time of a refusal does not tell how much of it was right.
    fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Middleware for the `/admin` routes: lets a loopback peer, or any peer
/// with the admin token, through; answers everyone else 403.
pub async fn require_admin(
    State(psp): State<Psp>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    let peer = peer(&request);
    let local = peer.is_some_and(|peer| peer.ip().to_canonical().is_loopback());
    let presented = bearer_token(request.headers());
    let authorized = match (psp.admin_token(), presented) {
        (Some(token), Some(presented)) => token.matches(presented),
        _ => false,
    };
    if local || authorized {
        return Ok(next.run(request).await);
    }
    tracing::warn!(
        ?peer,
        token_presented = presented.is_some(),
        "admin request refused"
    );
    Err(Error::AdminForbidden)
}

/// The address of the socket's other end: [`ConnectInfo`] when served by
/// [`run`](crate::run), or a test's [`MockConnectInfo`].
fn peer(request: &Request) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
        .or_else(|| {
            extensions
                .get::<MockConnectInfo<SocketAddr>>()
                .map(|MockConnectInfo(peer)| *peer)
        })
}

/// The credentials of an `Authorization: Bearer <token>` header (the scheme
/// is case-insensitive), as bytes: a token need not be valid UTF-8 to be
/// wrong.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(b"Bearer ".len())?;
    if !scheme.eq_ignore_ascii_case(b"Bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether `secret == presented`, in a time that depends on the secret's
/// length only: every byte of it is compared, whatever came before, with no
/// early exit for the optimizer to add.
fn constant_time_eq(secret: &[u8], presented: &[u8]) -> bool {
    let mut difference = u8::from(secret.len() != presented.len());
    for (index, expected) in secret.iter().enumerate() {
        let got = presented.get(index).copied().unwrap_or(0);
        difference = std::hint::black_box(difference | (expected ^ got));
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_bytes_are_equal() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        let others: [&[u8]; 6] = [b"", b"s3cre", b"s3cret!", b"S3cret", b"s3creT", b"s3cret\0"];
        for other in others {
            assert!(!constant_time_eq(b"s3cret", other), "{other:?}");
        }
    }

    #[test]
    fn an_empty_token_opens_nothing() {
        assert!(AdminToken::new("").is_none());
        assert!(AdminToken::new("t").is_some());
    }

    #[test]
    fn the_token_is_never_shown() {
        let token = AdminToken::new("hunter2").expect("a token");
        assert!(!format!("{token:?}").contains("hunter2"));
    }

    #[test]
    fn bearer_credentials_are_read_case_insensitively() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().expect("a header value"));
            bearer_token(&headers).map(<[u8]>::to_vec)
        };
        assert_eq!(with("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(with("bearer  abc "), Some(b"abc".to_vec()));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
