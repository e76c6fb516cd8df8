//! Exactly one host per request. HTTP/1.1 requires one `Host` header
//! (RFC 9112, section 3.2) and a server must answer `400` to a request
//! without one or with several. A request-target in absolute form
//! (`GET http://elsewhere/...`) names a host of its own; one that disagrees
//! with `Host` is refused too, so that nothing behind the gateway (logs,
//! redirects, a cache) can be told two different names for one request.
//!
//! Checked where requests come off the wire ([`crate::serve`]), so tests
//! that call the router directly need not name a host.

use axum::http::header::HOST;
use axum::http::{Request, Version};

use crate::error::ApiError;

/// `400` `invalid_host` unless the request names exactly one host.
pub fn check<B>(request: &Request<B>) -> Result<(), ApiError> {
    match problem(request) {
        Some(problem) => Err(ApiError::bad_request("invalid_host", problem)),
        None => Ok(()),
    }
}

fn problem<B>(request: &Request<B>) -> Option<&'static str> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("the request has more than one Host header");
    }
    match (host, request.uri().authority()) {
        // HTTP/1.0 predates Host; HTTP/2 names the host in `:authority`,
        // which arrives as the URI's authority.
        (None, _) if request.version() != Version::HTTP_11 => None,
        (None, _) => Some("the request has no Host header"),
        (Some(host), Some(authority))
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Some("the request-target names another host than the Host header")
        }
        (Some(_), _) => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(target: &str, hosts: &[&str], version: Version) -> Request<Body> {
        let mut builder = Request::get(target).version(version);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(Body::empty()).expect("request")
    }

    #[test]
    fn one_host_passes() {
        let v11 = Version::HTTP_11;
        assert_eq!(problem(&request("/api/v1/products", &["shop"], v11)), None);
        assert_eq!(
            problem(&request("http://shop:8080/x", &["SHOP:8080"], v11)),
            None
        );
        assert_eq!(problem(&request("/x", &[], Version::HTTP_10)), None);
        assert_eq!(
            problem(&request("http://shop/x", &[], Version::HTTP_2)),
            None
        );
    }

    #[test]
    fn no_host_two_hosts_or_two_names_are_refused() {
        let v11 = Version::HTTP_11;
        assert!(problem(&request("/x", &[], v11)).is_some());
        assert!(problem(&request("/x", &["shop", "shop"], v11)).is_some());
        assert!(problem(&request("http://elsewhere/x", &["shop"], v11)).is_some());
        assert!(problem(&request("http://shop/x", &[], v11)).is_some());
        let refused = check(&request("/x", &[], v11)).expect_err("no host");
        assert_eq!(refused.status(), 400);
        assert_eq!(refused.code(), "invalid_host");
    }
}
