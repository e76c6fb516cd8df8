//! One checkout is one trace. Every service exports its spans to an OTLP
//! collector inside this test; each saga path's order must come back as a
//! single connected trace: one root (the gateway's request), every other
//! span's parent present, each Kafka hop a consumer span whose parent is
//! the producer span that published the event, and spans from every
//! service the path goes through, the PSP calls and the compensations
//! included. Log lines written while serving the order carry its trace id.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use reqwest::StatusCode;
use serde_json::Value;
use shipshape_e2e::{Shop, order_body};
use shipshape_testkit::otlp::{CollectedSpan, Collector, SpanKind};
use shipshape_testkit::{Service, StackOptions};

const SAGA: Duration = Duration::from_secs(30);
/// How long the spans of a finished order may take to arrive: the batch
/// delay is set to 100 ms below, so this is mostly slack for a busy CI.
const SPANS_ARRIVE: Duration = Duration::from_secs(15);
/// Two batch delays: long enough for any span still on its way.
const LATE_SPANS: Duration = Duration::from_millis(300);

/// A stack exporting to `collector`. No order reaches the deadline by
/// itself, so no path depends on the machine's speed: the test passes the
/// `tok_slow` order's deadline (`Shop::cancel_during_the_capture`) while the PSP
/// holds its answer (9 s, well within the payment's 15 s timeout).
async fn traced_shop(collector: &Collector) -> anyhow::Result<Shop> {
    let mut options = StackOptions::for_tests()?
        .with_env(Service::Order, "SAGA_DEADLINE_MS", "3600000")
        .with_env(Service::Order, "SAGA_SWEEP_INTERVAL_MS", "100")
        .with_env(Service::Psp, "PSP_SLOW_CARD_DELAY_MS", "9000")
        .with_env(Service::Payment, "PSP_TIMEOUT_MS", "15000");
    for service in Service::ALL {
        options = options
            .with_env(service, "OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
            .with_env(service, "OTEL_BSP_SCHEDULE_DELAY", "100")
            .with_env(service, "LOG_FORMAT", "json");
    }
    Shop::start_with(options).await
}

/// Places an order; returns its id and the trace id the gateway answered.
async fn place(
    shop: &Shop,
    items: &[(&str, i64)],
    card: &str,
    country: &str,
) -> anyhow::Result<(String, String)> {
    let (status, headers, body) = shop
        .post_order(&order_body(items, card, country), None)
        .await?;
    ensure!(
        status == StatusCode::ACCEPTED,
        "not accepted: {status} {body}"
    );
    let order_id = body["order_id"].as_str().context("no order_id")?.to_owned();
    let trace_id = headers
        .get("x-trace-id")
        .context("the response names no trace (x-trace-id)")?
        .to_str()?
        .to_owned();
    Ok((order_id, trace_id))
}

/// A saga path: the order that takes it, and what its trace must contain
/// besides being connected.
struct Expected {
    path: &'static str,
    items: &'static [(&'static str, i64)],
    card: &'static str,
    country: &'static str,
    /// The order's final status and cancellation reason (`null` if none).
    outcome: (&'static str, Option<&'static str>),
    services: &'static [&'static str],
    /// Span names that must appear (PSP calls, compensations, the deadline).
    spans: &'static [&'static str],
}

const EVERY_SERVICE: &[&str] = &[
    "gateway",
    "order",
    "inventory",
    "payment",
    "shipping",
    "psp-simulator",
];

/// Waits until the order's trace is complete, then checks it; on timeout
/// fails with what is wrong with the trace as it stands.
async fn checked_trace(
    collector: &Collector,
    order_id: &str,
    trace_id: &str,
    expected: &Expected,
) -> anyhow::Result<Vec<CollectedSpan>> {
    let started = tokio::time::Instant::now();
    loop {
        let trace = collector.trace(trace_id);
        let problems = problems_of(collector, &trace, order_id, trace_id, expected);
        if problems.is_empty() {
            // Complete now; spans exported a batch later must not spoil it.
            tokio::time::sleep(LATE_SPANS).await;
            let trace = collector.trace(trace_id);
            let late = problems_of(collector, &trace, order_id, trace_id, expected);
            if late.is_empty() {
                return Ok(trace);
            }
            bail!(
                "order {order_id}, trace {trace_id}, after late spans:\n  {}\nspans:\n{}",
                late.join("\n  "),
                describe(&trace)
            );
        }
        if started.elapsed() > SPANS_ARRIVE {
            bail!(
                "order {order_id}, trace {trace_id}:\n  {}\nspans:\n{}",
                problems.join("\n  "),
                describe(&trace)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn problems_of(
    collector: &Collector,
    trace: &[CollectedSpan],
    order_id: &str,
    trace_id: &str,
    expected: &Expected,
) -> Vec<String> {
    problems(&collector.spans(), trace, order_id, trace_id, expected)
}

fn problems(
    all: &[CollectedSpan],
    trace: &[CollectedSpan],
    order_id: &str,
    trace_id: &str,
    expected: &Expected,
) -> Vec<String> {
    let mut problems = Vec::new();
    let by_id: BTreeMap<&str, &CollectedSpan> = trace
        .iter()
        .map(|span| (span.span_id.as_str(), span))
        .collect();

    let roots: Vec<_> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    match roots.as_slice() {
        [root] if root.service == "gateway" && root.name == "POST /api/v1/orders" => {}
        _ => problems.push(format!(
            "want one root, the gateway's POST /api/v1/orders; have {:?}",
            roots
                .iter()
                .map(|s| (&s.service, &s.name))
                .collect::<Vec<_>>()
        )),
    }
    for span in trace {
        if !span.parent_span_id.is_empty() && !by_id.contains_key(span.parent_span_id.as_str()) {
            problems.push(format!(
                "orphan: {} {:?} has parent {} which is not in the trace",
                span.service, span.name, span.parent_span_id
            ));
        }
        if span.kind == SpanKind::Consumer {
            let parent = by_id.get(span.parent_span_id.as_str());
            if parent.is_none_or(|p| p.kind != SpanKind::Producer) {
                problems.push(format!(
                    "Kafka hop broken: consumer span {} {:?} is not a child of a producer span",
                    span.service, span.name
                ));
            }
        }
    }
    let services: BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    for service in expected.services {
        if !services.contains(service) {
            problems.push(format!("no span from {service}"));
        }
    }
    for name in expected.spans {
        if !trace.iter().any(|s| s.name == *name) {
            problems.push(format!("no span named {name:?}"));
        }
    }
    for stray in all
        .iter()
        .filter(|s| s.attribute("order_id") == Some(order_id) && s.trace_id != trace_id)
    {
        problems.push(format!(
            "span {} {:?} of this order is in another trace, {}",
            stray.service, stray.name, stray.trace_id
        ));
    }
    problems
}

fn describe(trace: &[CollectedSpan]) -> String {
    trace
        .iter()
        .map(|s| {
            format!(
                "  {:<14} {:<45} {:?} id={} parent={}",
                s.service, s.name, s.kind, s.span_id, s.parent_span_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The JSON lines of `service`'s log that carry `trace_id`.
fn log_lines_of_trace(shop: &Shop, service: Service, trace_id: &str) -> anyhow::Result<Vec<Value>> {
    let path = shop.stack.log_path(service);
    let log = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
    Ok(log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["trace_id"] == trace_id)
        .collect())
}

#[tokio::test]
async fn every_saga_path_is_one_connected_trace_across_all_services() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let shop = traced_shop(&collector).await?;

    let paths = [
        Expected {
            path: "happy",
            items: &[("SKU-0001", 1)],
            card: "tok_visa",
            country: "DE",
            outcome: ("CONFIRMED", None),
            services: EVERY_SERVICE,
            spans: &[
                "POST /v1/captures",
                "shipshape.order.v1.OrderService/CreateOrder",
            ],
        },
        Expected {
            path: "out of stock",
            items: &[("SKU-0019", 6)],
            card: "tok_visa",
            country: "DE",
            outcome: ("CANCELLED", Some("out_of_stock")),
            services: &["gateway", "order", "inventory", "payment"],
            spans: &[],
        },
        Expected {
            path: "declined",
            items: &[("SKU-0002", 1)],
            card: "tok_decline",
            country: "DE",
            outcome: ("CANCELLED", Some("payment_declined")),
            services: &["gateway", "order", "inventory", "payment", "psp-simulator"],
            spans: &["POST /v1/captures"],
        },
        Expected {
            path: "unserved destination: refund and release",
            items: &[("SKU-0003", 1)],
            card: "tok_visa",
            country: "AQ",
            outcome: ("CANCELLED", Some("shipping_failed")),
            services: EVERY_SERVICE,
            spans: &["POST /v1/captures", "POST /v1/refunds"],
        },
        Expected {
            path: "deadline: cancel, then refund the late capture",
            items: &[("SKU-0005", 1)],
            card: "tok_slow",
            country: "DE",
            outcome: ("CANCELLED", Some("timed_out")),
            services: &["gateway", "order", "inventory", "payment", "psp-simulator"],
            spans: &["order deadline passed", "POST /v1/refunds"],
        },
    ];
    let mut placed = Vec::new();
    for expected in paths {
        let (order_id, trace_id) =
            place(&shop, expected.items, expected.card, expected.country).await?;
        placed.push((order_id, trace_id, expected));
    }
    let (slow_order, _, _) = placed
        .iter()
        .find(|(_, _, expected)| expected.card == "tok_slow")
        .context("no tok_slow path")?;
    shop.cancel_during_the_capture(slow_order, SAGA).await?;
    for (order_id, _, expected) in &placed {
        let order = shop
            .wait_terminal(order_id, SAGA)
            .await
            .with_context(|| format!("{}: order {order_id}", expected.path))?;
        let (status, reason) = expected.outcome;
        assert_eq!(order["status"], status, "{}: {order}", expected.path);
        assert_eq!(
            order["cancellation_reason"].as_str(),
            reason,
            "{}: {order}",
            expected.path
        );
    }
    shop.wait_quiet(SAGA).await?;
    for (order_id, trace_id, expected) in &placed {
        let trace = checked_trace(&collector, order_id, trace_id, expected)
            .await
            .with_context(|| format!("path {:?}", expected.path))?;
        eprintln!(
            "{}: {} spans in trace {trace_id}",
            expected.path,
            trace.len()
        );
    }

    // The happy order's log lines, in the gateway and the order service,
    // carry its trace id (and the order's id where the line is about it).
    let (happy_order, happy_trace, _) = &placed[0];
    for (service, message) in [
        (Service::Gateway, "order accepted"),
        (Service::Order, "order placed"),
    ] {
        let lines = log_lines_of_trace(&shop, service, happy_trace)?;
        let line = lines
            .iter()
            .find(|line| line["message"] == message)
            .with_context(|| {
                format!("no {message:?} line with trace_id {happy_trace} in {service:?}'s log")
            })?;
        assert_eq!(line["order_id"], happy_order.as_str(), "{line}");
        assert!(
            line["span_id"].as_str().is_some_and(|id| id.len() == 16),
            "{line}"
        );
        assert_eq!(line["level"], "INFO");
    }
    Ok(())
}
