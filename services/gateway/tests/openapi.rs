//! The OpenAPI document at `/openapi.json` against the router that serves
//! it: every route is documented with its methods, the bearer scheme is
//! there and used by the routes that need a caller, and every error answer
//! documented refers to the one error schema. The router is called directly,
//! without a socket; the upstreams are a port where nothing listens.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use shipshape_gateway::Config;
use shipshape_gateway::web::WebConfig;
use tower::ServiceExt;

mod support;
use support::{NOTHING_LISTENS, app_with, bearer, config};

const ERROR_SCHEMA: &str = "#/components/schemas/ErrorBody";
/// The methods probed on every documented path.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn app() -> axum::Router {
    app_with(&Config {
        // Probing every path with every method is more than a burst of the
        // default limit allows from one client.
        rate_limit_enabled: false,
        // Every documented route answers: the demo sign-in's too.
        web: WebConfig {
            demo_sign_in: true,
            // A simulator that does not answer: its routes are there.
            psp_admin_url: Some(NOTHING_LISTENS.to_owned()),
            ..WebConfig::default()
        },
        ..config(NOTHING_LISTENS)
    })
}

/// `GET /openapi.json`, anonymously, as the document.
async fn document() -> Value {
    let response = app()
        .oneshot(
            Request::get("/openapi.json")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

/// The documented operations: (METHOD, path template).
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("path item");
            item.keys()
                .filter(|key| METHODS.contains(&key.to_uppercase().as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// The routes `router()` declares, read from its source: each
/// `.route(PATH, METHOD(handler).METHOD(handler)...)`. `openapi::PATH`
/// stands for `/openapi.json`.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let source = include_str!("../src/lib.rs");
    let start = source.find("pub fn router(").expect("router() in lib.rs");
    let body = &source[start..];
    let end = body.find("\n}\n").expect("end of router()");
    let body = &body[..end];
    let mut routes = BTreeSet::new();
    for (at, _) in body.match_indices(".route(") {
        let call = balanced(&body[at + ".route".len()..]);
        let (path, handlers) = call.split_once(',').expect("route(path, handlers)");
        let path = path.trim();
        let path = if path == "openapi::PATH" {
            "/openapi.json".to_owned()
        } else {
            path.trim_matches('"').to_owned()
        };
        assert!(path.starts_with('/'), "unexpected route path {path}");
        // `get(a).post(b)`: the method routers are the calls at depth 0.
        let mut depth = 0;
        let mut word = String::new();
        for c in handlers.chars() {
            match c {
                '(' => {
                    if depth == 0 && !word.is_empty() {
                        let method = word.to_uppercase();
                        assert!(METHODS.contains(&method.as_str()), "method {method}");
                        routes.insert((method, path.clone()));
                    }
                    depth += 1;
                    word.clear();
                }
                ')' => depth -= 1,
                c if c.is_ascii_alphabetic() && depth == 0 => word.push(c),
                _ => word.clear(),
            }
        }
    }
    assert!(routes.len() >= 7, "too few routes found: {routes:?}");
    routes
}

/// The text inside the parentheses `text` starts with.
fn balanced(text: &str) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[1..i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in {text}")
}

/// A concrete URL for a path template.
fn concrete(path: &str) -> String {
    path.replace("{sku}", "SKU-0001")
        .replace("{id}", "0193b6d2-7c1e-7a3b-9f00-1234567890ab")
        .replace("{customer}", "alice")
}

#[tokio::test]
async fn the_document_is_openapi_3_and_public() {
    let document = document().await;
    let version = document["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "{version}");
    assert!(document["info"]["title"].is_string());
}

#[tokio::test]
async fn every_route_of_the_router_is_documented_and_nothing_else() {
    let document = document().await;
    assert_eq!(documented(&document), routes_in_source());
}

#[tokio::test]
async fn the_router_answers_exactly_the_documented_methods() {
    let document = document().await;
    let documented = documented(&document);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    let admin = bearer("probe", &["admin"]);
    for path in paths {
        let url = concrete(path);
        for method in METHODS {
            let request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).expect("method"))
                .uri(&url)
                .header(AUTHORIZATION, &admin)
                .body(Body::empty())
                .expect("request");
            let response = app().oneshot(request).await.expect("infallible");
            let status = response.status();
            if documented.contains(&(method.to_owned(), path.clone())) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {url}");
                assert_ne!(status, StatusCode::NOT_FOUND, "{method} {url}");
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {url}");
                let allow = response.headers()[ALLOW].to_str().expect("ascii");
                for (documented_method, documented_path) in &documented {
                    if documented_path == path {
                        assert!(allow.contains(documented_method.as_str()), "{url}: {allow}");
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn the_bearer_scheme_guards_customer_and_admin_routes() {
    let document = document().await;
    let scheme = &document["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(scheme["bearerFormat"], "JWT", "{scheme}");

    let public = [
        ("GET", "/api/v1/products"),
        ("GET", "/api/v1/products/{sku}"),
        ("GET", "/openapi.json"),
        // The web shop's session: signing in is how a caller gets a token,
        // and signing out only clears a cookie.
        ("POST", "/api/v1/demo/sign-in/{customer}"),
        ("POST", "/api/v1/sign-out"),
    ];
    for (method, path) in documented(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let responses = &operation["responses"];
        if public.contains(&(method.as_str(), path.as_str())) {
            assert!(operation.get("security").is_none(), "{method} {path}");
        } else {
            assert_eq!(
                operation["security"],
                serde_json::json!([{"bearerAuth": []}]),
                "{method} {path}"
            );
            assert!(responses.get("401").is_some(), "{method} {path}: 401");
        }
        if path.starts_with("/api/v1/admin/") {
            assert!(responses.get("403").is_some(), "{method} {path}: 403");
        }
    }
}

#[tokio::test]
async fn every_error_answer_refers_to_the_error_schema() {
    let document = document().await;
    let mut errors = 0;
    for (method, path) in documented(&document) {
        let responses = document["paths"][&path][method.to_lowercase()]["responses"]
            .as_object()
            .expect("responses");
        for (status, response) in responses {
            let code: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{method} {path}: status `{status}` is not a number"));
            let retry_after = &response["headers"]["Retry-After"];
            let challenge = &response["headers"]["WWW-Authenticate"];
            match code {
                401 | 403 => assert_eq!(challenge["required"], true, "{method} {path} {code}"),
                429 | 503 => assert_eq!(retry_after["required"], true, "{method} {path} {code}"),
                _ => {}
            }
            if code < 400 {
                continue;
            }
            errors += 1;
            let content = response["content"].as_object().expect("content");
            assert_eq!(
                content.keys().collect::<Vec<_>>(),
                ["application/json"],
                "{method} {path} {code}"
            );
            assert_eq!(
                content["application/json"]["schema"]["$ref"], ERROR_SCHEMA,
                "{method} {path} {code}"
            );
        }
    }
    assert!(errors > 30, "only {errors} error answers documented");

    // The schema is the body `error.rs` sends.
    let schemas = &document["components"]["schemas"];
    let body = &schemas["ErrorBody"];
    assert_eq!(body["required"], serde_json::json!(["error"]), "{body}");
    let detail = match &body["properties"]["error"]["$ref"] {
        Value::String(reference) => &schemas[reference.trim_start_matches("#/components/schemas/")],
        _ => &body["properties"]["error"],
    };
    assert_eq!(
        detail["required"],
        serde_json::json!(["code", "message"]),
        "{detail}"
    );
}
