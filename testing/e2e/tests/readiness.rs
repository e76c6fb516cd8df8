//! `/readyz` tells the truth about a service's dependencies: it turns
//! not-ready, naming the failing dependency in its JSON body, while the
//! database or the broker cannot be reached, and ready again once they
//! can; `/healthz` (liveness) stays up throughout, so an orchestrator
//! stops routing to the service without restarting it.

use std::time::Duration;

use anyhow::bail;
use reqwest::StatusCode;
use serde_json::Value;
use shipshape_testkit::{Fault, Link, Service, Stack, StackOptions};

/// How long a probe may take to notice: the checks' own timeouts plus a
/// busy machine.
const NOTICE: Duration = Duration::from_secs(20);

async fn probe(stack: &Stack, service: Service, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", stack.ops_url(service)))
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

/// Polls `/readyz` until `done` holds for its answer; returns that answer.
async fn wait_readyz(
    stack: &Stack,
    service: Service,
    what: &str,
    done: impl Fn(StatusCode, &Value) -> bool,
) -> anyhow::Result<Value> {
    let started = tokio::time::Instant::now();
    loop {
        let (status, body) = probe(stack, service, "/readyz").await?;
        if done(status, &body) {
            return Ok(body);
        }
        if started.elapsed() > NOTICE {
            bail!("{service:?} /readyz never became {what}; last: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn not_ready_because_of(stack: &Stack, service: Service, check: &str) -> anyhow::Result<()> {
    let body = wait_readyz(
        stack,
        service,
        &format!("not ready ({check})"),
        |status, body| {
            status == StatusCode::SERVICE_UNAVAILABLE && body["checks"][check]["error"].is_string()
        },
    )
    .await?;
    assert_eq!(body["status"], "not_ready", "{body}");
    let (live, _) = probe(stack, service, "/healthz").await?;
    assert_eq!(live, StatusCode::OK, "liveness must not follow readiness");
    Ok(())
}

async fn ready_again(stack: &Stack, service: Service) -> anyhow::Result<()> {
    let body = wait_readyz(stack, service, "ready", |status, _| {
        status == StatusCode::OK
    })
    .await?;
    for check in ["database", "broker", "migrations"] {
        assert_eq!(body["checks"][check], "ok", "{body}");
    }
    Ok(())
}

#[tokio::test]
async fn readyz_follows_the_database_and_the_broker() -> anyhow::Result<()> {
    let stack = Stack::start(
        StackOptions::for_tests()?
            .with_proxy(Link::Database(Service::Order))
            .with_proxy(Link::Broker),
    )
    .await?;
    ready_again(&stack, Service::Order).await?;

    // The order database goes away: only the order service is affected.
    let database = stack.fault(Link::Database(Service::Order))?;
    database.set(Fault::Reset);
    not_ready_because_of(&stack, Service::Order, "database").await?;
    let (inventory, _) = probe(&stack, Service::Inventory, "/readyz").await?;
    assert_eq!(
        inventory,
        StatusCode::OK,
        "another service's database is not inventory's"
    );
    database.clear();
    ready_again(&stack, Service::Order).await?;

    // The broker stops answering: every service that uses it says so.
    let broker = stack.fault(Link::Broker)?;
    broker.set(Fault::Blackhole);
    for service in [Service::Order, Service::Shipping] {
        not_ready_because_of(&stack, service, "broker").await?;
    }
    broker.clear();
    for service in [Service::Order, Service::Shipping] {
        ready_again(&stack, service).await?;
    }
    Ok(())
}
