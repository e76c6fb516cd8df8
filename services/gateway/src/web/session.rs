//! The web shop's sign-in: a JWT like any other, kept in an `HttpOnly`
//! cookie so the page's script never holds it and it never appears in a
//! URL. [`crate::auth::authenticate`] reads it when a request has no
//! `Authorization` header.
//!
//! The demo sign-in mints tokens for a fixed set of demo accounts with the
//! gateway's own HS256 secret. It is for local runs and compose; off by
//! default (`DEMO_SIGN_IN`), and the chart leaves it off: a real deployment
//! signs people in with its identity provider, whose tokens the gateway
//! checks as it checks any bearer token.

use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use shipshape_auth::ADMIN_SCOPE;

/// The cookie holding the signed-in caller's token.
pub const COOKIE_NAME: &str = "shipshape_session";

/// How long a demo sign-in lasts.
pub const DEMO_SESSION: Duration = Duration::from_secs(8 * 3600);

/// One account the demo sign-in offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoAccount {
    /// The token's subject: the customer who owns the orders.
    pub subject: &'static str,
    pub scopes: &'static [&'static str],
    /// Who it is, for the sign-in page.
    pub about: &'static str,
}

/// Two customers, to show that each sees only their own orders, and an
/// operator, who is a customer too.
pub const DEMO_ACCOUNTS: [DemoAccount; 3] = [
    DemoAccount {
        subject: "alice",
        scopes: &[],
        about: "a customer",
    },
    DemoAccount {
        subject: "bob",
        scopes: &[],
        about: "another customer",
    },
    DemoAccount {
        subject: "ops",
        scopes: &[ADMIN_SCOPE],
        about: "an operator (the admin scope)",
    },
];

/// The demo account named `subject`.
pub fn demo_account(subject: &str) -> Option<DemoAccount> {
    DEMO_ACCOUNTS
        .iter()
        .copied()
        .find(|account| account.subject == subject)
}

/// The session token in the request's cookies, if any.
pub fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` value that keeps `token` for `lifetime`: never
/// readable by scripts (`HttpOnly`), never sent by another site's page
/// (`SameSite=Strict`, which with the API's JSON-only bodies stops cross-site
/// requests made in the caller's name), and over HTTPS only when `secure`.
pub fn set_cookie(token: &str, lifetime: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        lifetime.as_secs()
    )
}

/// The `Set-Cookie` value that ends the session.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", Duration::ZERO, secure)
}

/// Whether the browser says another site's page made this request
/// (`Sec-Fetch-Site: cross-site`, or `same-site`: a sibling subdomain,
/// which `SameSite=Strict` does not keep out). Such a request must not act
/// with the session cookie, nor sign anyone in.
pub fn sent_by_another_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site" || site.as_bytes() == b"same-site")
}

/// Where to go after signing in: a path of this site only, so a link cannot
/// send someone elsewhere (`//evil.example`, `https://...`).
pub fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.chars().any(char::is_control) =>
        {
            path
        }
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn cookies(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(COOKIE, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_session_token_is_found_among_other_cookies() {
        assert_eq!(
            token(&cookies(&[
                "theme=dark; shipshape_session=abc.def.ghi; x=1"
            ]))
            .as_deref(),
            Some("abc.def.ghi")
        );
        assert_eq!(
            token(&cookies(&["theme=dark", "shipshape_session=t"])).as_deref(),
            Some("t")
        );
        assert_eq!(token(&cookies(&["shipshape_session="])), None);
        assert_eq!(token(&cookies(&["shipshape_sessionx=t"])), None);
        assert_eq!(token(&HeaderMap::new()), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_when_asked() {
        let cookie = set_cookie("t", Duration::from_secs(60), true);
        assert_eq!(
            cookie,
            "shipshape_session=t; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie("t", Duration::from_secs(60), false).contains("Secure"));
        assert!(clear_cookie(false).starts_with("shipshape_session=; Path=/; Max-Age=0;"));
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(
            local_path(Some("/orders?page_token=x")),
            "/orders?page_token=x"
        );
        for elsewhere in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "orders",
            "/\n",
        ] {
            assert_eq!(local_path(Some(elsewhere)), "/", "{elsewhere:?}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn requests_from_other_sites_are_told_apart() {
        let from = |site: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("sec-fetch-site", HeaderValue::from_static(site));
            sent_by_another_site(&headers)
        };
        assert!(from("cross-site"));
        assert!(from("same-site"));
        assert!(!from("same-origin"));
        assert!(!from("none"));
        assert!(!sent_by_another_site(&HeaderMap::new()), "curl sends none");
    }

    #[test]
    fn the_operator_is_the_only_demo_admin() {
        let admins: Vec<&str> = DEMO_ACCOUNTS
            .iter()
            .filter(|account| account.scopes.contains(&ADMIN_SCOPE))
            .map(|account| account.subject)
            .collect();
        assert_eq!(admins, ["ops"]);
        assert_eq!(demo_account("bob").map(|a| a.subject), Some("bob"));
        assert_eq!(demo_account("mallory"), None);
    }
}
