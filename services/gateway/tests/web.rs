//! The web shop's session and pages as far as the gateway answers them by
//! itself: the demo sign-in and its cookie, the cookie standing for a bearer
//! token, the way to the sign-in page, and what every page is served with.
//! The router is called directly; the upstreams are a port where nothing
//! listens, so pages that need them are the "unavailable" page.

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use shipshape_gateway::Config;
use shipshape_gateway::web::WebConfig;
use tower::ServiceExt;

mod support;
use support::{NOTHING_LISTENS, app_with, config, forged_bearer};

fn app(demo_sign_in: bool) -> axum::Router {
    app_with(&Config {
        web: WebConfig {
            demo_sign_in,
            secure_cookie: true,
            ..WebConfig::default()
        },
        ..config(NOTHING_LISTENS)
    })
}

async fn send(app: axum::Router, request: Request<Body>) -> (Response, String) {
    let response = app.oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

fn post(path: &str) -> Request<Body> {
    Request::post(path)
        .header("content-length", "0")
        .body(Body::empty())
        .expect("request")
}

/// Signs in as `customer`; returns the `Set-Cookie` value.
async fn sign_in(app: axum::Router, customer: &str) -> String {
    let (response, body) = send(app, post(&format!("/api/v1/demo/sign-in/{customer}"))).await;
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["subject"], customer);
    response.headers()[SET_COOKIE]
        .to_str()
        .expect("ASCII")
        .to_owned()
}

/// The `name=value` part of a `Set-Cookie` value, as a browser sends it back.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().expect("a pair")
}

#[tokio::test]
async fn the_demo_sign_in_sets_an_http_only_strict_cookie_that_signs_the_pages_in() {
    let app = app(true);
    let set_cookie = sign_in(app.clone(), "alice").await;
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/",
        "Max-Age=28800",
    ] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    let mut checkout = get("/checkout");
    checkout
        .headers_mut()
        .insert(COOKIE, cookie_pair(&set_cookie).parse().expect("header"));
    let (response, page) = send(app, checkout).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(page.contains(r#"id="signed-in-as">alice<"#), "{page}");
    assert!(page.contains("data-idempotency-key="));
}

#[tokio::test]
async fn the_operator_signs_in_with_the_admin_scope_and_unknown_accounts_do_not() {
    let app = app(true);
    let (response, body) = send(app.clone(), post("/api/v1/demo/sign-in/ops")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body.contains(r#""scopes":["admin"]"#), "{body}");
    let (response, body) = send(app, post("/api/v1/demo/sign-in/mallory")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(body.contains(r#""code":"not_found""#), "{body}");
}

#[tokio::test]
async fn with_the_demo_sign_in_off_there_is_none() {
    let (response, body) = send(app(false), post("/api/v1/demo/sign-in/alice")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(body.contains("demo_sign_in_off"), "{body}");
    assert!(response.headers().get(SET_COOKIE).is_none());
    let (_, page) = send(app(false), get("/sign-in")).await;
    assert!(!page.contains("data-customer"));
}

#[tokio::test]
async fn signing_out_clears_the_cookie() {
    let (response, _) = send(app(true), post("/api/v1/sign-out")).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cleared = response.headers()[SET_COOKIE].to_str().expect("ASCII");
    assert!(cleared.starts_with("shipshape_session=; "), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test]
async fn signed_out_the_customer_pages_lead_to_the_sign_in_and_back() {
    for (path, next) in [
        ("/checkout", "/checkout"),
        ("/orders", "/orders"),
        (
            "/orders/0193b6d2-7c1e-7a3b-9f00-1234567890ab",
            "/orders/0193b6d2-7c1e-7a3b-9f00-1234567890ab",
        ),
    ] {
        let (response, _) = send(app(true), get(path)).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(
            response.headers()[LOCATION],
            format!("/sign-in?next={next}").as_str()
        );
    }
}

#[tokio::test]
async fn a_refused_cookie_is_no_session_but_a_refused_bearer_token_is_a_401() {
    let forged = forged_bearer("alice");
    let token = forged.trim_start_matches("Bearer ");
    let mut with_cookie = get("/cart");
    with_cookie.headers_mut().insert(
        COOKIE,
        format!("shipshape_session={token}")
            .parse()
            .expect("header"),
    );
    let (response, page) = send(app(true), with_cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(page.contains(r#"id="sign-in-link""#), "served signed out");

    let mut with_bearer = get("/cart");
    with_bearer
        .headers_mut()
        .insert(AUTHORIZATION, forged.parse().expect("header"));
    let (response, _) = send(app(true), with_bearer).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pages_run_only_this_origins_script_and_an_upstream_down_is_a_page_too() {
    let (response, page) = send(app(true), get("/cart")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .expect("ASCII");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(page.starts_with("<!DOCTYPE html>"));

    // The catalog needs inventory, which does not answer here.
    let (response, page) = send(app(true), get("/")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("Unavailable"), "{page}");

    let (response, script) = send(app(true), get("/static/shop.js")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ASCII")
            .starts_with("text/javascript")
    );
    assert!(script.contains("Idempotency-Key"));
}

#[tokio::test]
async fn another_sites_page_can_neither_sign_in_nor_act_with_the_cookie() {
    let app = app(true);
    let mut cross_site = post("/api/v1/demo/sign-in/alice");
    cross_site
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().expect("header"));
    let (response, body) = send(app.clone(), cross_site).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(body.contains("cross_site"), "{body}");
    assert!(response.headers().get(SET_COOKIE).is_none());

    let session = sign_in(app.clone(), "ops").await;
    let rebuild = |site: &'static str| {
        let mut request = post("/api/v1/admin/order-timelines/rebuild");
        request
            .headers_mut()
            .insert(COOKIE, cookie_pair(&session).parse().expect("header"));
        request
            .headers_mut()
            .insert("sec-fetch-site", site.parse().expect("header"));
        request
    };
    // From a sibling subdomain: the cookie does not count.
    let (response, _) = send(app.clone(), rebuild("same-site")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // From the shop's own page it does (the order service is not there).
    let (response, _) = send(app, rebuild("same-origin")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}
