//! Who may use the operators' API (`/api/v1/admin/...`): whoever presents
//! the gateway's `ADMIN_TOKEN` as `Authorization: Bearer <token>`.
//!
//! The admin routes exist only when `ADMIN_TOKEN` is set; without it they
//! answer 404 like any unknown path, so a deployment that never chose a
//! token exposes nothing. A request without the token, or with a wrong one,
//! is `401` with `WWW-Authenticate: Bearer`, before its body is read.
//!
//! One shared static token is a stop-gap for the load test's restocking: a
//! later issue replaces it with JWTs whose scopes say who may do what.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The secret that opens the admin API. It never appears in `Debug` output
/// or logs.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// The token, or `None` for an empty one: an empty `ADMIN_TOKEN=` (as a
    /// compose file or chart leaves it by default) means "admin API off",
    /// never "any empty bearer token will do".
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (!token.is_empty()).then(|| Self(token.into()))
    }

    /// Whether `presented` is the token, in time that does not depend on
    /// where the two first differ, so the token cannot be guessed byte by
    /// byte from response times. (Only its length can be learned that way,
    /// which says nothing about its bytes.)
    fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The bearer token of an `Authorization` header, if it has one. The scheme
/// is case-insensitive (RFC 9110, section 11.1).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(b"Bearer ".len())?;
    scheme
        .eq_ignore_ascii_case(b"Bearer ")
        .then(|| token.trim_ascii())
}

/// Middleware on every admin route: lets the request through only with the
/// right bearer token.
pub async fn require_token(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Response {
    match bearer(request.headers()) {
        Some(presented) if token.matches(presented) => next.run(request).await,
        presented => {
            tracing::warn!(
                token_present = presented.is_some(),
                path = request.uri().path(),
                "admin request refused"
            );
            unauthorized()
        }
    }
}

fn unauthorized() -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this admin endpoint needs `Authorization: Bearer <ADMIN_TOKEN>`",
    )
    .into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(authorization).expect("header"),
        );
        headers
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = AdminToken::new("s3cret-token").expect("non-empty");
        assert!(token.matches(b"s3cret-token"));
        for wrong in [&b""[..], b"s3cret-toke", b"s3cret-token!", b"S3CRET-TOKEN"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn an_empty_token_turns_the_admin_api_off() {
        assert!(AdminToken::new("").is_none());
        assert!(AdminToken::new("  ").is_none());
        assert_eq!(
            format!("{:?}", AdminToken::new("abc").expect("non-empty")),
            "AdminToken(<redacted>)"
        );
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer(&headers("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
