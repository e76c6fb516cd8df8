//! What operators see: the metrics every service exports on `/metrics`
//! after orders took each kind of path, and the gRPC servers' standard
//! health checks.

use std::time::Duration;

use shipshape_e2e::Shop;
use shipshape_testkit::{Service, StackOptions};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SAGA: Duration = Duration::from_secs(30);

/// The services that consume events and publish through an outbox.
const EVENT_DRIVEN: [Service; 4] = [
    Service::Order,
    Service::Inventory,
    Service::Payment,
    Service::Shipping,
];

/// The sum of every series of `name` whose labels include all of `labels`
/// (whatever their order and other labels); `None` when there is none.
fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (series, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let has_all = labels
                .iter()
                .all(|(key, value)| series.split(',').any(|l| l == format!("{key}=\"{value}\"")));
            has_all.then(|| value.trim().parse().ok())?
        })
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Polls `service`'s metrics until `holds` accepts them (the gauges are
/// sampled every few seconds).
async fn eventually(
    shop: &Shop,
    service: Service,
    what: &str,
    holds: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = shop.metrics(service).await?;
        if holds(&text) {
            return Ok(text);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{service:?}: {what} never held:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Before the first order, every counter a dashboard or alert reads already
/// exists, at 0: a rate over a series that appears only with its first event
/// reads as "no data", which hides a broken panel until the first incident.
#[tokio::test]
async fn every_counter_exists_at_zero_before_the_first_order() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let zero = |text: &str, name: &str, labels: &[(&str, &str)]| {
        assert_eq!(
            sum(text, name, labels),
            Some(0.0),
            "{name} {labels:?}:\n{text}"
        );
    };

    let gateway = shop.metrics(Service::Gateway).await?;
    for downstream in ["order", "inventory"] {
        for counter in [
            "shipshape_retries_total",
            "shipshape_retry_budget_exhausted_total",
            "shipshape_call_timeouts_total",
            "shipshape_breaker_rejections_total",
            "shipshape_bulkhead_rejections_total",
        ] {
            zero(&gateway, counter, &[("downstream", downstream)]);
        }
        zero(
            &gateway,
            "shipshape_breaker_transitions_total",
            &[
                ("downstream", downstream),
                ("from", "closed"),
                ("to", "open"),
            ],
        );
    }
    zero(&gateway, "shipshape_http_shed_total", &[("scope", "all")]);
    zero(
        &gateway,
        "shipshape_http_shed_total",
        &[("scope", "client")],
    );
    zero(&gateway, "shipshape_http_rate_limited_total", &[]);
    zero(&gateway, "shipshape_http_connections_refused_total", &[]);
    zero(
        &gateway,
        "shipshape_http_bodies_refused_total",
        &[("code", "payload_too_large")],
    );
    zero(
        &gateway,
        "shipshape_catalog_stale_responses_total",
        &[("route", "/api/v1/products")],
    );

    // The consumers register their counters once they have subscribed,
    // which readiness does not wait for.
    for service in EVENT_DRIVEN {
        let text = eventually(&shop, service, "the consumer's counters", |text| {
            sum(text, "shipshape_events_handled_total", &[]).is_some()
        })
        .await?;
        zero(&text, "shipshape_events_handled_total", &[]);
        zero(&text, "shipshape_events_failed_total", &[]);
        zero(&text, "shipshape_dead_letters_total", &[]);
    }
    let order = shop.metrics(Service::Order).await?;
    zero(
        &order,
        "shipshape_events_handled_total",
        &[("type", "PaymentCaptured")],
    );
    zero(
        &order,
        "shipshape_saga_outcomes_total",
        &[("status", "CANCELLED"), ("reason", "timed_out")],
    );
    zero(
        &order,
        "shipshape_saga_outcomes_total",
        &[("status", "CONFIRMED"), ("reason", "none")],
    );
    zero(
        &order,
        "shipshape_retries_total",
        &[("downstream", "inventory")],
    );
    let payment = shop.metrics(Service::Payment).await?;
    zero(
        &payment,
        "shipshape_events_handled_total",
        &[("type", "OrderPlaced")],
    );
    zero(&payment, "shipshape_breaker_rejections_total", &[]);
    Ok(())
}

#[tokio::test]
async fn every_service_exports_red_saga_consumer_outbox_and_pool_metrics() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let placed = [
        ("tok_visa", "DE"),
        ("tok_visa", "DE"),
        ("tok_decline", "DE"),
        ("tok_visa", "AQ"),
    ];
    let mut ids = Vec::new();
    for (card, country) in placed {
        ids.push(shop.place(&[("SKU-0003", 1)], card, country).await?);
    }
    for id in &ids {
        shop.wait_terminal(id, SAGA).await?;
    }
    shop.wait_quiet(SAGA).await?;
    let orders = placed.len() as f64;

    // Each order counted once, by its outcome, with its saga's duration.
    let order = shop.metrics(Service::Order).await?;
    let outcome = |status, reason| {
        sum(
            &order,
            "shipshape_saga_outcomes_total",
            &[("status", status), ("reason", reason)],
        )
    };
    assert_eq!(outcome("CONFIRMED", "none"), Some(2.0), "{order}");
    assert_eq!(outcome("CANCELLED", "payment_declined"), Some(1.0));
    assert_eq!(outcome("CANCELLED", "shipping_failed"), Some(1.0));
    assert_eq!(
        sum(&order, "shipshape_saga_outcomes_total", &[]),
        Some(orders)
    );
    let sagas = |status| {
        sum(
            &order,
            "shipshape_saga_duration_seconds_count",
            &[("status", status)],
        )
    };
    assert_eq!(sagas("CONFIRMED"), Some(2.0));
    assert_eq!(sagas("CANCELLED"), Some(2.0));
    assert!(order.contains("# HELP shipshape_saga_outcomes_total"));

    // RED at every synchronous hop of a checkout.
    let gateway = shop.metrics(Service::Gateway).await?;
    let posted = sum(
        &gateway,
        "shipshape_http_requests_total",
        &[
            ("route", "/api/v1/orders"),
            ("method", "POST"),
            ("status", "202"),
        ],
    );
    assert!(posted >= Some(orders), "{gateway}");
    let polled = sum(
        &gateway,
        "shipshape_http_request_duration_seconds_count",
        &[("route", "/api/v1/orders/{id}"), ("method", "GET")],
    );
    assert!(polled >= Some(orders), "{gateway}");
    let create_order = [
        ("downstream", "order"),
        ("method", "CreateOrder"),
        ("code", "OK"),
    ];
    let called = sum(
        &gateway,
        "shipshape_grpc_client_requests_total",
        &create_order,
    );
    assert!(called >= Some(orders), "{gateway}");
    let served = sum(
        &order,
        "shipshape_grpc_server_requests_total",
        &[
            ("service", "shipshape.order.v1.OrderService"),
            ("method", "CreateOrder"),
            ("code", "OK"),
        ],
    );
    assert!(served >= Some(orders), "{order}");
    let price_skus = [
        ("downstream", "inventory"),
        ("method", "PriceSkus"),
        ("code", "OK"),
    ];
    let priced = sum(&order, "shipshape_grpc_client_requests_total", &price_skus);
    assert!(priced >= Some(orders), "{order}");
    let inventory = shop.metrics(Service::Inventory).await?;
    let priced = sum(
        &inventory,
        "shipshape_grpc_server_request_duration_seconds_count",
        &[
            ("service", "shipshape.inventory.v1.InventoryService"),
            ("method", "PriceSkus"),
        ],
    );
    assert!(priced >= Some(orders), "{inventory}");

    // Every event-driven service, once quiet: nothing lagging, nothing
    // waiting in the outbox, its events published and handled, its pool
    // sampled.
    for service in EVENT_DRIVEN {
        let text = eventually(&shop, service, "lag and backlog 0", |text| {
            let lag = sum(text, "shipshape_consumer_lag", &[]);
            let lagging = text
                .lines()
                .filter(|l| l.starts_with("shipshape_consumer_lag{"))
                .any(|l| !l.ends_with(" 0"));
            lag == Some(0.0) && !lagging && sum(text, "shipshape_outbox_backlog", &[]) == Some(0.0)
        })
        .await?;
        assert!(
            sum(&text, "shipshape_outbox_published_total", &[]) >= Some(1.0),
            "{text}"
        );
        assert!(
            sum(
                &text,
                "shipshape_outbox_publish_duration_seconds_count",
                &[]
            ) >= Some(1.0),
            "{text}"
        );
        assert!(
            sum(&text, "shipshape_event_handle_duration_seconds_count", &[]) >= Some(1.0),
            "{text}"
        );
        let max = sum(&text, "shipshape_db_pool_max_connections", &[]);
        let idle = sum(&text, "shipshape_db_pool_connections", &[("state", "idle")]);
        let in_use = sum(
            &text,
            "shipshape_db_pool_connections",
            &[("state", "in_use")],
        );
        let (Some(max), Some(idle), Some(in_use)) = (max, idle, in_use) else {
            panic!("{service:?}: pool gauges missing:\n{text}");
        };
        assert!(max >= 1.0 && idle + in_use <= max, "{service:?}: {text}");
    }
    Ok(())
}

/// The services a server lists over one version of gRPC reflection
/// (`v1` or `v1alpha`, whose types differ only in their module), sorted.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new($channel)
            .server_reflection_info(futures_util::stream::iter([request]))
            .await?
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(listed)) = answers
            .message()
            .await?
            .and_then(|answer| answer.message_response)
        else {
            anyhow::bail!("no list of services over {}", stringify!($version));
        };
        let mut listed: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
        listed.sort();
        listed
    }};
}

#[tokio::test]
async fn grpc_servers_answer_health_checks_and_reflection() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    for (service, name) in [
        (Service::Order, "shipshape.order.v1.OrderService"),
        (
            Service::Inventory,
            "shipshape.inventory.v1.InventoryService",
        ),
    ] {
        // Health and reflection answer every peer the CA vouches for.
        let channel = shop.stack.grpc_channel(service, "payment")?;
        let mut health = HealthClient::new(channel.clone());
        // The server as a whole (""), and the service by its name.
        for checked in ["", name] {
            let answer = health
                .check(HealthCheckRequest {
                    service: checked.to_owned(),
                })
                .await?
                .into_inner();
            assert_eq!(
                answer.status(),
                ServingStatus::Serving,
                "{service:?} {checked:?}"
            );
        }
        let unknown = health
            .check(HealthCheckRequest {
                service: "no.such.Service".to_owned(),
            })
            .await
            .expect_err("an unknown service has no health");
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        // Reflection, in both versions clients speak, names every service
        // the server offers.
        let mut expected = vec![
            name,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        expected.sort();
        let listed = list_services!(v1, channel.clone());
        assert_eq!(listed, expected, "{service:?} over v1");
        let listed = list_services!(v1alpha, channel);
        assert_eq!(listed, expected, "{service:?} over v1alpha");
    }
    Ok(())
}

/// Reflection tells a caller every method, so production may switch it off
/// (`GRPC_REFLECTION=false`, as the chart's production values do); health
/// checks still answer.
#[tokio::test]
async fn reflection_can_be_switched_off() -> anyhow::Result<()> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let options = StackOptions::for_tests()?
        .with_env(Service::Order, "GRPC_REFLECTION", "false")
        .with_env(Service::Inventory, "GRPC_REFLECTION", "false");
    let shop = Shop::start_with(options).await?;
    for service in [Service::Order, Service::Inventory] {
        // Health and reflection answer every peer the CA vouches for.
        let channel = shop.stack.grpc_channel(service, "payment")?;
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(health.status(), ServingStatus::Serving, "{service:?}");
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let refused = ServerReflectionClient::new(channel)
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .expect_err("no reflection");
        assert_eq!(refused.code(), tonic::Code::Unimplemented, "{service:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_server_shutting_down_reports_not_serving_first() -> anyhow::Result<()> {
    let mut shop = Shop::start().await?;
    let channel = shop.stack.grpc_channel(Service::Inventory, "gateway")?;
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    let first = watch.message().await?.map(|answer| answer.status());
    assert_eq!(first, Some(ServingStatus::Serving));
    // Read apart from the shutdown: the server drains open streams, this
    // one included, before it exits.
    let next = tokio::spawn(async move { watch.message().await.map(|a| a.map(|a| a.status())) });
    let exit = shop.stack.terminate(Service::Inventory).await?;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(next.await??, Some(ServingStatus::NotServing));
    Ok(())
}
