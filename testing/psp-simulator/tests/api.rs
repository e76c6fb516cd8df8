//! The simulator's HTTP contract, exercised through its router without a
//! socket: requests say where they come from with `MockConnectInfo`, from
//! a loopback address unless a test is about the admin routes' callers.
//! Tests that involve waiting run on paused time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use shipshape_psp_simulator::{AdminToken, Psp, router};
use shipshape_runtime::CancellationToken;
use tokio::time::Instant;
use tower::ServiceExt;

const SLOW_CARD_DELAY: Duration = Duration::from_secs(2);

/// A caller on this machine, as the test kit and its tests are.
const LOOPBACK_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

/// A caller elsewhere, such as the payment service in another pod.
const REMOTE_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 40000);

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

struct Simulator {
    app: Router,
    shutdown: CancellationToken,
}

impl Simulator {
    fn new() -> Self {
        let shutdown = CancellationToken::new();
        let app = seen_from(Psp::new(SLOW_CARD_DELAY, shutdown.clone()), LOOPBACK_PEER);
        Self { app, shutdown }
    }

    /// A simulator started on the ledger journal at `path`, as after a
    /// restart with `PSP_JOURNAL_PATH` set.
    fn with_journal(path: &Path) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let psp = Psp::with_journal(path, SLOW_CARD_DELAY, shutdown.clone())?;
        let app = seen_from(psp, LOOPBACK_PEER);
        Ok(Self { app, shutdown })
    }

    /// A request that owns what it needs, so it can run in its own task.
    fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> impl Future<Output = (StatusCode, Value)> + Send + 'static {
        let request = match body {
            Some(body) => json_request(method, uri, body.to_string()),
            None => Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .expect("request"),
        };
        call(self.app.clone(), request)
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, uri, Some(&body)).await
    }

    async fn put(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PUT, uri, Some(&body)).await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Method::GET, uri, None).await
    }

    async fn ledger(&self) -> Value {
        let (status, ledger) = self.get("/admin/ledger").await;
        assert_eq!(status, StatusCode::OK);
        ledger
    }

    async fn captures(&self) -> Vec<Value> {
        self.ledger().await["captures"]
            .as_array()
            .expect("captures")
            .clone()
    }
}

/// The simulator's router, called as if by a socket from `peer`.
fn seen_from(psp: Psp, peer: SocketAddr) -> Router {
    router(psp).layer(MockConnectInfo(peer))
}

/// A fresh directory for a journal, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "shipshape-psp-journal-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    fn journal(&self) -> PathBuf {
        self.0.join("psp-ledger.jsonl")
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn journal_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .expect("journal")
        .lines()
        .count()
}

fn json_request(method: Method, uri: &str, body: String) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request")
}

async fn call(app: Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {bytes:?}"));
    (status, body)
}

fn capture(key: &str, amount_minor: i64, token: &str) -> Value {
    json!({ "idempotency_key": key, "amount_minor": amount_minor, "currency": "EUR", "card_token": token })
}

fn refund(key: &str, psp_reference: &Value, amount_minor: i64) -> Value {
    json!({ "idempotency_key": key, "psp_reference": psp_reference, "amount_minor": amount_minor, "currency": "EUR" })
}

fn assert_error(status: StatusCode, body: &Value, expected_status: StatusCode, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn an_approved_capture_is_replayed_and_charged_once() {
    let psp = Simulator::new();
    let (status, body) = psp
        .post("/v1/captures", capture("order-1", 1999, "tok_visa"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["amount_minor"], 1999);
    assert_eq!(body["currency"], "EUR");
    let reference = body["psp_reference"].as_str().expect("reference");
    assert!(reference.starts_with("psp_"), "{reference}");

    let (replay_status, replay) = psp
        .post("/v1/captures", capture("order-1", 1999, "tok_visa"))
        .await;
    assert_eq!(replay_status, status);
    assert_eq!(replay, body);

    let captures = psp.captures().await;
    assert_eq!(captures.len(), 1);
    let entry = &captures[0];
    assert_eq!(entry["idempotency_key"], "order-1");
    assert_eq!(entry["psp_reference"], reference);
    assert_eq!(entry["card_token"], "tok_visa");
    assert_eq!(entry["status"], "approved");
    assert!(entry["at_micros"].as_u64().is_some_and(|at| at > 0));
}

#[tokio::test]
async fn every_other_tok_token_is_approved() {
    let psp = Simulator::new();
    for (key, token) in [("a", "tok_mastercard"), ("b", "tok_anything_else")] {
        let (status, body) = psp.post("/v1/captures", capture(key, 500, token)).await;
        assert_eq!(status, StatusCode::OK, "{token}: {body}");
        assert_eq!(body["status"], "approved");
    }
}

#[tokio::test]
async fn declines_are_402_and_replayed() {
    let psp = Simulator::new();
    for (token, reason) in [
        ("tok_decline", "card_declined"),
        ("tok_insufficient_funds", "insufficient_funds"),
    ] {
        for _attempt in 0..2 {
            let (status, body) = psp.post("/v1/captures", capture(token, 1999, token)).await;
            assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
            assert_eq!(body, json!({ "status": "declined", "reason": reason }));
        }
    }
    let captures = psp.captures().await;
    assert_eq!(captures.len(), 2);
    assert_eq!(captures[0]["status"], "declined");
    assert_eq!(captures[0]["reason"], "card_declined");
    assert!(captures[0]["psp_reference"].is_null());
}

#[tokio::test]
async fn a_reused_key_with_a_different_request_is_422() {
    let psp = Simulator::new();
    psp.post("/v1/captures", capture("order-1", 1999, "tok_visa"))
        .await;
    let (status, body) = psp
        .post("/v1/captures", capture("order-1", 2999, "tok_visa"))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(psp.captures().await.len(), 1);
}

#[tokio::test]
async fn an_unavailable_processor_is_503_and_stores_nothing() {
    let psp = Simulator::new();
    for _attempt in 0..2 {
        let (status, body) = psp
            .post("/v1/captures", capture("order-1", 1999, "tok_unavailable"))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "processor_unavailable",
        );
    }
    assert!(psp.captures().await.is_empty());
}

#[tokio::test]
async fn invalid_captures_are_400() {
    let psp = Simulator::new();
    let invalid = [
        capture("", 1999, "tok_visa"),
        capture("k", 0, "tok_visa"),
        capture("k", -1, "tok_visa"),
        capture("k", 1999, "visa"),
        json!({ "idempotency_key": "k", "amount_minor": 1999, "currency": "eur", "card_token": "tok_visa" }),
        json!({ "idempotency_key": "k", "amount_minor": 1999, "currency": "EURO", "card_token": "tok_visa" }),
        json!({ "idempotency_key": "k", "amount_minor": 19.99, "currency": "EUR", "card_token": "tok_visa" }),
        json!({ "idempotency_key": "k", "currency": "EUR", "card_token": "tok_visa" }),
        json!([]),
    ];
    for body in invalid {
        let (status, answer) = psp.post("/v1/captures", body.clone()).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert!(psp.captures().await.is_empty());
}

#[tokio::test]
async fn malformed_or_untyped_bodies_get_a_json_400() {
    let psp = Simulator::new();
    for uri in ["/v1/captures", "/v1/refunds", "/admin/faults"] {
        let method = if uri == "/admin/faults" {
            Method::PUT
        } else {
            Method::POST
        };
        let malformed = json_request(method.clone(), uri, "{\"idempotency_key\": ".to_owned());
        let (status, body) = call(psp.app.clone(), malformed).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

        let untyped = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(capture("k", 1, "tok_visa").to_string()))
            .expect("request");
        let (status, body) = call(psp.app.clone(), untyped).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn refunds_are_bounded_by_the_capture_and_replayed() {
    let psp = Simulator::new();
    let (_, captured) = psp
        .post("/v1/captures", capture("order-1", 1000, "tok_visa"))
        .await;
    let reference = &captured["psp_reference"];

    let (status, body) = psp
        .post("/v1/refunds", refund("refund-1", reference, 700))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "refunded");
    assert_eq!(&body["psp_reference"], reference);
    assert!(
        body["refund_reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("rf_")),
        "{body}"
    );

    let (replay_status, replay) = psp
        .post("/v1/refunds", refund("refund-1", reference, 700))
        .await;
    assert_eq!(replay_status, StatusCode::OK);
    assert_eq!(replay, body);

    let (status, body) = psp
        .post("/v1/refunds", refund("refund-2", reference, 301))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "refund_exceeds_capture",
    );
    let (status, _) = psp
        .post("/v1/refunds", refund("refund-2", reference, 300))
        .await;
    assert_eq!(status, StatusCode::OK);

    let refunds = psp.ledger().await["refunds"]
        .as_array()
        .expect("refunds")
        .clone();
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[0]["idempotency_key"], "refund-1");
    assert_eq!(&refunds[0]["psp_reference"], reference);
    assert_eq!(refunds[0]["amount_minor"], 700);
    assert_eq!(refunds[0]["currency"], "EUR");
    assert_eq!(refunds[0]["refund_reference"], replay["refund_reference"]);
}

#[tokio::test]
async fn refund_errors() {
    let psp = Simulator::new();
    let (status, body) = psp
        .post(
            "/v1/refunds",
            refund("refund-1", &json!("psp_unknown"), 100),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_capture");

    let (_, captured) = psp
        .post("/v1/captures", capture("order-1", 1000, "tok_visa"))
        .await;
    let mut in_dollars = refund("refund-2", &captured["psp_reference"], 100);
    in_dollars["currency"] = json!("USD");
    let (status, body) = psp.post("/v1/refunds", in_dollars).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "currency_mismatch",
    );

    let (status, body) = psp
        .post(
            "/v1/refunds",
            refund("refund-3", &captured["psp_reference"], 0),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn faults_are_read_replaced_and_validated() {
    let psp = Simulator::new();
    let off = json!({ "latency_ms": 0, "error_rate": 0.0, "lose_response_rate": 0.0 });
    assert_eq!(
        psp.get("/admin/faults").await,
        (StatusCode::OK, off.clone())
    );

    let some = json!({ "latency_ms": 150, "error_rate": 0.25, "lose_response_rate": 0.5 });
    assert_eq!(
        psp.put("/admin/faults", some.clone()).await,
        (StatusCode::OK, some.clone())
    );
    assert_eq!(
        psp.get("/admin/faults").await,
        (StatusCode::OK, some.clone())
    );

    for invalid in [
        json!({ "error_rate": 1.5 }),
        json!({ "error_rate": -0.1 }),
        json!({ "lose_response_rate": 7 }),
        json!({ "latency_ms": -1 }),
        json!({ "latency_ms": 3_600_000 }),
        json!({ "error_rat": 0.5 }),
        json!({ "error_rate": "half" }),
    ] {
        let (status, body) = psp.put("/admin/faults", invalid.clone()).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(psp.get("/admin/faults").await, (StatusCode::OK, some));

    // A PUT replaces everything: what it leaves out is switched off.
    let (_, only_errors) = psp.put("/admin/faults", json!({ "error_rate": 0.5 })).await;
    assert_eq!(
        only_errors,
        json!({ "latency_ms": 0, "error_rate": 0.5, "lose_response_rate": 0.0 })
    );
}

#[tokio::test]
async fn an_injected_error_is_503_and_processes_nothing() {
    let psp = Simulator::new();
    psp.put("/admin/faults", json!({ "error_rate": 1.0 })).await;
    let (status, body) = psp
        .post("/v1/captures", capture("order-1", 1999, "tok_visa"))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "processor_unavailable",
    );
    assert!(psp.captures().await.is_empty());

    psp.put("/admin/faults", json!({})).await;
    let (status, _) = psp
        .post("/v1/captures", capture("order-1", 1999, "tok_visa"))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_every_v1_answer() {
    let psp = Simulator::new();
    psp.put("/admin/faults", json!({ "latency_ms": 750 })).await;

    let started = Instant::now();
    let (status, _) = psp
        .post("/v1/captures", capture("order-1", 1999, "tok_visa"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(started.elapsed(), Duration::from_millis(750));

    let started = Instant::now();
    let (status, _) = psp
        .post("/v1/captures", capture("order-2", 1999, "tok_amex"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(started.elapsed(), Duration::from_millis(750));

    let started = Instant::now();
    psp.get("/admin/ledger").await;
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_slow_card_is_charged_on_arrival_and_answered_late() {
    let psp = Simulator::new();
    let started = Instant::now();
    let answer = tokio::spawn(psp.send(
        Method::POST,
        "/v1/captures",
        Some(&capture("order-1", 1999, "tok_slow")),
    ));

    tokio::time::sleep(SLOW_CARD_DELAY / 2).await;
    assert!(!answer.is_finished());
    assert_eq!(psp.captures().await.len(), 1);

    let (status, body) = answer.await.expect("request task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "approved");
    assert_eq!(started.elapsed(), SLOW_CARD_DELAY);

    // A retry (after the caller timed out, say) is answered from the record.
    let started = Instant::now();
    let (status, replay) = psp
        .post("/v1/captures", capture("order-1", 1999, "tok_slow"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay, body);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_still_charges_and_shutdown_releases_it() {
    let psp = Simulator::new();
    psp.put("/admin/faults", json!({ "lose_response_rate": 1.0 }))
        .await;
    let answer = tokio::spawn(psp.send(
        Method::POST,
        "/v1/captures",
        Some(&capture("order-1", 1999, "tok_visa")),
    ));

    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!answer.is_finished(), "the answer should still be held");
    let captures = psp.captures().await;
    assert_eq!(captures.len(), 1);

    psp.shutdown.cancel();
    let (status, body) = answer.await.expect("request task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["psp_reference"], captures[0]["psp_reference"]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_a_slow_answer_early() {
    let psp = Simulator::new();
    let answer = tokio::spawn(psp.send(
        Method::POST,
        "/v1/captures",
        Some(&capture("order-1", 1999, "tok_slow")),
    ));
    tokio::task::yield_now().await;
    let started = Instant::now();
    psp.shutdown.cancel();
    let (status, _) = answer.await.expect("request task");
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < SLOW_CARD_DELAY);
}

#[tokio::test]
async fn unknown_routes_are_a_json_404() {
    let psp = Simulator::new();
    let (status, body) = psp.get("/v1/payments").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_capture_can_be_looked_up_by_its_key() {
    let psp = Simulator::new();
    let (status, body) = psp.get("/v1/captures/order-9").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "capture_not_found");

    let (_, approved) = psp
        .post("/v1/captures", capture("order-9", 1999, "tok_visa"))
        .await;
    let (status, found) = psp.get("/v1/captures/order-9").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found, approved);

    psp.post("/v1/captures", capture("order-10", 1999, "tok_decline"))
        .await;
    let (status, found) = psp.get("/v1/captures/order-10").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(found["reason"], "card_declined");
}

#[tokio::test]
async fn a_journaled_ledger_survives_a_restart() {
    let dir = ScratchDir::new();
    let journal = dir.journal();
    let before = Simulator::with_journal(&journal).expect("started");
    assert!(journal.exists(), "a missing journal is created");
    let (_, approved) = before
        .post("/v1/captures", capture("order-1", 1000, "tok_visa"))
        .await;
    let reference = &approved["psp_reference"];
    let (status, _) = before
        .post("/v1/captures", capture("order-2", 500, "tok_decline"))
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let (status, refunded) = before
        .post("/v1/refunds", refund("refund-1", reference, 600))
        .await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    // Replays and refusals are not decisions, and are not journaled.
    before
        .post("/v1/captures", capture("order-1", 1000, "tok_visa"))
        .await;
    before
        .post("/v1/captures", capture("order-3", 500, "tok_unavailable"))
        .await;
    assert_eq!(journal_lines(&journal), 3);
    let ledger = before.ledger().await;
    // Nothing is flushed or closed on the way down, as with SIGKILL.
    std::mem::forget(before);

    let after = Simulator::with_journal(&journal).expect("restarted");
    assert_eq!(after.ledger().await, ledger);
    let (status, replay) = after
        .post("/v1/captures", capture("order-1", 1000, "tok_visa"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay, approved);
    let (status, replay) = after
        .post("/v1/captures", capture("order-2", 500, "tok_decline"))
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(replay["reason"], "card_declined");
    let (status, replay) = after
        .post("/v1/refunds", refund("refund-1", reference, 600))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay, refunded);
    let (status, body) = after
        .post("/v1/refunds", refund("refund-2", reference, 401))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "refund_exceeds_capture",
    );
    assert_eq!(after.ledger().await, ledger, "replays charge nothing");
    assert_eq!(journal_lines(&journal), 3);

    // What the restarted simulator decides is journaled after the rest.
    let (status, _) = after
        .post("/v1/captures", capture("order-4", 700, "tok_amex"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let ledger = after.ledger().await;
    let again = Simulator::with_journal(&journal).expect("restarted again");
    assert_eq!(again.ledger().await, ledger);
    assert_eq!(again.captures().await.len(), 3);
}

#[tokio::test]
async fn an_incomplete_last_line_is_dropped_and_later_lines_start_afresh() {
    let dir = ScratchDir::new();
    let journal = dir.journal();
    let before = Simulator::with_journal(&journal).expect("started");
    before
        .post("/v1/captures", capture("order-1", 1000, "tok_visa"))
        .await;
    let ledger = before.ledger().await;
    // A write cut short by the process's death: never answered.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .expect("journal");
    std::io::Write::write_all(
        &mut file,
        br#"{"capture":{"idempotency_key":"order-2","amou"#,
    )
    .expect("written");

    let after = Simulator::with_journal(&journal).expect("restarted");
    assert_eq!(after.ledger().await, ledger);
    let (status, _) = after
        .post("/v1/captures", capture("order-2", 500, "tok_visa"))
        .await;
    assert_eq!(status, StatusCode::OK, "the key was never answered");
    let ledger = after.ledger().await;

    let again = Simulator::with_journal(&journal).expect("restarted again");
    assert_eq!(again.ledger().await, ledger);
    assert_eq!(journal_lines(&journal), 2);
}

#[tokio::test]
async fn a_malformed_line_before_the_last_stops_start_up() {
    let dir = ScratchDir::new();
    let journal = dir.journal();
    let before = Simulator::with_journal(&journal).expect("started");
    for key in ["order-1", "order-2"] {
        before
            .post("/v1/captures", capture(key, 1000, "tok_visa"))
            .await;
    }
    let text = std::fs::read_to_string(&journal).expect("journal");
    let lines: Vec<&str> = text.lines().collect();
    for garbage in ["not json", r#"{"payment":{}}"#, lines[0]] {
        std::fs::write(&journal, format!("{}\n{garbage}\n{}\n", lines[0], lines[1]))
            .expect("written");
        let Err(error) = Simulator::with_journal(&journal) else {
            panic!("started on a journal with {garbage:?} on line 2");
        };
        let message = format!("{error:#}");
        assert!(message.contains("line 2"), "{message}");
        assert!(
            message.contains(&journal.display().to_string()),
            "{message}"
        );
    }
}

/// A simulator whose admin token is [`ADMIN_TOKEN`] when `with_token`.
fn admin_psp(with_token: bool) -> Psp {
    let token = if with_token {
        AdminToken::new(ADMIN_TOKEN)
    } else {
        None
    };
    Psp::new(SLOW_CARD_DELAY, CancellationToken::new()).with_admin_token(token)
}

/// Every admin route, with a body that it accepts.
fn admin_requests() -> [(Method, &'static str, Option<Value>); 3] {
    [
        (Method::GET, "/admin/faults", None),
        (
            Method::PUT,
            "/admin/faults",
            Some(json!({ "latency_ms": 5 })),
        ),
        (Method::GET, "/admin/ledger", None),
    ]
}

/// Calls `app` with `Authorization: authorization`, if given.
async fn call_authorized(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&Value>,
    authorization: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    };
    call(app.clone(), request.expect("request")).await
}

#[tokio::test]
async fn admin_routes_answer_loopback_callers() {
    for peer in [
        "127.0.0.1:40000",
        "127.9.9.9:40000",
        "[::1]:40000",
        "[::ffff:127.0.0.1]:40000",
    ] {
        let app = seen_from(admin_psp(false), peer.parse().expect("an address"));
        for (method, uri, body) in admin_requests() {
            let (status, answer) = call_authorized(&app, method, uri, body.as_ref(), None).await;
            assert_eq!(status, StatusCode::OK, "{peer} {uri}: {answer}");
        }
    }
}

#[tokio::test]
async fn admin_routes_answer_other_callers_with_the_token() {
    let psp = admin_psp(true);
    let remote = seen_from(psp.clone(), REMOTE_PEER);
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    for (method, uri, body) in admin_requests() {
        let (status, answer) =
            call_authorized(&remote, method, uri, body.as_ref(), Some(&authorization)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {answer}");
    }
    // Called without a socket, a request is not local, but the token is
    // enough.
    let (status, answer) = call_authorized(
        &router(psp),
        Method::GET,
        "/admin/ledger",
        None,
        Some(&authorization),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn admin_routes_refuse_other_callers_without_the_right_token() {
    let right = format!("Bearer {ADMIN_TOKEN}");
    let longer = format!("Bearer {ADMIN_TOKEN}0");
    let shorter = format!("Bearer {}", &ADMIN_TOKEN[1..]);
    let other_scheme = format!("Basic {ADMIN_TOKEN}");
    let with_token = admin_psp(true);
    let without_token = admin_psp(false);
    let cases = [
        // (simulator, the peer, if any, and what is presented)
        (&with_token, Some(REMOTE_PEER), None),
        (&with_token, Some(REMOTE_PEER), Some("Bearer wrong-token")),
        (&with_token, Some(REMOTE_PEER), Some(longer.as_str())),
        (&with_token, Some(REMOTE_PEER), Some(shorter.as_str())),
        (&with_token, Some(REMOTE_PEER), Some(other_scheme.as_str())),
        (&with_token, Some(REMOTE_PEER), Some("Bearer ")),
        // Without a socket the caller's address is unknown: not local.
        (&with_token, None, None),
        (&with_token, None, Some("Bearer wrong-token")),
        (&without_token, Some(REMOTE_PEER), None),
        (&without_token, Some(REMOTE_PEER), Some(right.as_str())),
        (&without_token, Some(REMOTE_PEER), Some("Bearer ")),
        (&without_token, None, None),
    ];
    for (psp, peer, authorization) in cases {
        let app = match peer {
            Some(peer) => seen_from(psp.clone(), peer),
            None => router(psp.clone()),
        };
        for (method, uri, body) in admin_requests() {
            let (status, answer) =
                call_authorized(&app, method, uri, body.as_ref(), authorization).await;
            assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");
            assert!(
                !answer.to_string().contains(ADMIN_TOKEN),
                "the refusal does not show the token: {answer}"
            );
        }
    }

    // The refused PUTs changed nothing.
    for psp in [with_token, without_token] {
        let local = seen_from(psp, LOOPBACK_PEER);
        let (status, faults) =
            call_authorized(&local, Method::GET, "/admin/faults", None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(faults["latency_ms"], 0, "{faults}");
    }
}

#[tokio::test]
async fn the_api_answers_every_caller() {
    let remote = seen_from(admin_psp(true), REMOTE_PEER);
    let body = capture("order-1", 1999, "tok_visa");
    let (status, answer) =
        call_authorized(&remote, Method::POST, "/v1/captures", Some(&body), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) =
        call_authorized(&remote, Method::GET, "/v1/captures/order-1", None, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}
