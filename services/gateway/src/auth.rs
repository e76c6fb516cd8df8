//! Who is calling the API.
//!
//! [`authenticate`] runs before everything that needs to know the caller
//! (the rate limiter, the handlers): a request with `Authorization: Bearer
//! <jwt>` gets the token checked and, if it is genuine, the caller's
//! [`Identity`] in its extensions. A bad token is refused with `401` by
//! [`refuse_bad_tokens`], which runs after the rate limiter, so a flood of
//! forged tokens is limited by address like any anonymous traffic; either
//! way, before the body is read. A request without a bearer token goes on
//! anonymous: the catalog is public. Without an `Authorization` header, the
//! web shop's session cookie (`crate::web::session`) carries the token
//! instead; a refused cookie is no session. Handlers that need a caller take
//! [`Customer`] (`401` without one) or [`Admin`] (`403` without the
//! `admin` scope).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shipshape_auth::{ADMIN_SCOPE, Identity, Verifier};

use crate::error::ApiError;
use crate::web::session;

/// Middleware: checks the bearer token, if any, and records the caller, or
/// why the token was refused.
pub async fn authenticate(
    State(verifier): State<Arc<Verifier>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(token) = bearer(request.headers()) {
        match verifier.verify(&token) {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
            }
            Err(error) => {
                tracing::debug!(%error, path = request.uri().path(), "bearer token refused");
                request
                    .extensions_mut()
                    .insert(RefusedToken(error.to_string()));
            }
        }
    } else if let Some(token) = session::token(request.headers()).filter(|_| {
        // Another site's page may make the browser send the cookie with a
        // body-less POST; only reads are let through with it.
        request.method().is_safe() || !session::sent_by_another_site(request.headers())
    }) {
        // The shop's session: a refused one (expired, say) is no session,
        // so the pages are served signed out instead of failing.
        match verifier.verify(&token) {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
            }
            Err(error) => tracing::debug!(%error, "session cookie refused"),
        }
    }
    next.run(request).await
}

/// Why [`authenticate`] refused a request's token.
#[derive(Clone)]
struct RefusedToken(String);

/// Middleware, inside the rate limiter: answers `401` for a refused token.
pub async fn refuse_bad_tokens(request: Request, next: Next) -> Response {
    match request.extensions().get::<RefusedToken>() {
        Some(RefusedToken(reason)) => ApiError::unauthenticated(Some(reason)).into_response(),
        None => next.run(request).await,
    }
}

/// The bearer token of the `Authorization` header; `None` without one, or
/// with another scheme (RFC 6750: no credentials to judge). The scheme is
/// case-insensitive (RFC 9110, section 11.1). An empty token is a token,
/// and a bad one.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = match value.iter().position(|b| *b == b' ') {
        Some(space) => (&value[..space], &value[space + 1..]),
        None => (value, &b""[..]),
    };
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| String::from_utf8_lossy(token.trim_ascii()).into_owned())
}

/// The authenticated caller of a customer endpoint.
pub struct Customer(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .map(Customer)
            .ok_or_else(|| ApiError::unauthenticated(None))
    }
}

/// An authenticated caller with the `admin` scope.
pub struct Admin(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Customer(identity) = Customer::from_request_parts(parts, state).await?;
        if identity.has_scope(ADMIN_SCOPE) {
            Ok(Admin(identity))
        } else {
            tracing::warn!(
                subject = identity.subject(),
                path = parts.uri.path(),
                "admin request without the admin scope"
            );
            Err(ApiError::insufficient_scope(ADMIN_SCOPE))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn token_of(authorization: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        bearer(&headers)
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_no_token() {
        assert_eq!(token_of("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token_of("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(token_of("BEARER abc").as_deref(), Some("abc"));
        assert_eq!(token_of("Bearer").as_deref(), Some(""));
        for other in ["Basic dXNlcjpwYXNz", "abc", "Bearerabc"] {
            assert_eq!(token_of(other), None, "{other}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
