//! The load test against the real stack, briefly: 20 s at 5 checkouts/s
//! through the library, as CI runs it. Every number must add up, every
//! order must end terminal with its path's outcome, no request may fail,
//! the report must be written, and restocking through the admin API must
//! keep stock conserved. What one checkout cost is counted from the
//! services' metrics and Postgres's statistics, and must add up to a saga.

use std::time::Duration;

use shipshape_loadtest::client::Secret;
use shipshape_loadtest::cost::{self, CostSources};
use shipshape_loadtest::procstat::{Sampler, Watch};
use shipshape_loadtest::report::{Machine, Report};
use shipshape_loadtest::run::{Load, RunOptions, run};
use shipshape_loadtest::schedule::{Rate, Schedule};
use shipshape_testkit::{Service, Stack, StackOptions, postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_places_every_order_and_fails_nothing() -> anyhow::Result<()> {
    let options = StackOptions::for_tests()?;
    let database_prefix = format!("{}_", options.database_prefix);
    let stack = Stack::start(options).await?;
    let gateway = stack.gateway_url();
    let sources = CostSources {
        metrics: [
            Service::Gateway,
            Service::Order,
            Service::Inventory,
            Service::Payment,
            Service::Shipping,
        ]
        .map(|service| (service.name().to_owned(), stack.ops_url(service)))
        .to_vec(),
        postgres: Some((postgres::ensure_server().await?, database_prefix)),
    };

    // The admin route is there, and closed to a customer.
    let http = reqwest::Client::new();
    let restock = format!("{gateway}/api/v1/admin/products/SKU-0001/stock");
    let refused = http
        .put(&restock)
        .bearer_auth(stack.token("smoke-customer", &[])?)
        .json(&serde_json::json!({"add": 5}))
        .send()
        .await?;
    assert_eq!(refused.status(), 403);

    let rate = Rate::new(5.0)?;
    let mut options = RunOptions::new(
        gateway.clone(),
        Load::Open(Schedule::constant(rate, Duration::from_secs(20))),
    );
    options.admin_token = Some(Secret::new(stack.token("smoke-operator", &["admin"])?));
    options.token = Some(Secret::new(stack.token("smoke-customer", &[])?));
    options.progress = false;
    let sampler = Sampler::start(Watch {
        pids: vec![(
            "gateway".to_owned(),
            stack.pid(Service::Gateway).expect("gateway pid"),
        )],
        postgres_prefix: None,
        this_process: true,
    });
    let before = cost::snapshot(&sources).await?;
    let run = run(&options).await?;
    let processes = sampler.finish().await;
    let after = cost::snapshot_after_run(&sources).await?;

    let totals = &run.totals;
    assert_eq!(totals.arrivals, 100, "{totals:#?}");
    assert_eq!(totals.placed, 100, "{totals:#?}");
    assert_eq!(
        totals.terminal, 100,
        "every placed order ends terminal: {totals:#?}"
    );
    assert_eq!(totals.not_terminal, 0);
    assert!(run.counts_match(), "{totals:#?}");
    let outcomes: u64 = totals.outcomes.values().map(|o| o.as_expected).sum();
    assert_eq!(
        outcomes, 100,
        "every order took its path: {:#?}",
        totals.outcomes
    );
    assert_eq!(totals.failed_checkouts, 0, "{:#?}", totals.error_examples);
    assert!(totals.errors.is_empty(), "{:#?}", totals.error_examples);
    for (endpoint, stats) in &totals.endpoints {
        assert_eq!(stats.errors, 0, "{endpoint}");
        assert!(stats.requests >= 100, "{endpoint}: {}", stats.requests);
    }
    assert_eq!(totals.saga.count, 100);
    assert_eq!(totals.timeline.iter().map(|w| w.arrivals).sum::<u64>(), 100);
    // The first top-up brought every product the run buys to the target.
    assert_eq!(run.stock.method, "admin_api");
    assert_eq!(run.stock.restocks, 18, "{:?}", run.stock);

    // Every checkout is at least an order placed and its outcome, as events
    // published and consumed, a gRPC call from the gateway, transactions in the
    // order service's database, and the requests that placed and polled it.
    let cost = cost::cost(&before, &after, totals.terminal, &processes);
    for (what, at_least) in [
        ("events produced", 2.0),
        ("events consumed", 2.0),
        ("gRPC calls (polls included)", 1.0),
        ("HTTP requests (polls included)", 2.0),
    ] {
        let value = cost.per_checkout[what];
        assert!(value >= at_least, "{what}: {value} per checkout, {cost:#?}");
    }
    assert_eq!(cost.per_checkout["dead letters"], 0.0, "{cost:#?}");
    for database in ["order", "inventory", "payment", "shipping"] {
        let transactions = cost.transactions_per_checkout[database];
        assert!(transactions > 0.0, "{database}: {cost:#?}");
        assert!(cost.rows_written_per_checkout[database] > 0.0, "{cost:#?}");
    }
    assert!(cost.transactions_per_checkout["order"] >= 2.0, "{cost:#?}");
    assert!(cost.cpu_seconds_per_1000["gateway"] > 0.0, "{cost:#?}");

    let report = Report {
        tool: "smoke".to_owned(),
        started_at: "now".to_owned(),
        command: "run".to_owned(),
        gateway,
        machine: Machine::detect(),
        run: Some(run),
        capacity: None,
        baseline: None,
        processes,
        cost: Some(cost),
    };
    let gateway_process = report
        .processes
        .iter()
        .find(|p| p.name == "gateway")
        .expect("the gateway was watched");
    assert!(gateway_process.rss_max_mib > 1.0, "{gateway_process:?}");

    let dir = std::env::temp_dir().join(format!("shipshape-smoke-{}", std::process::id()));
    report.write(&dir)?;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json"))?)?;
    assert_eq!(json["run"]["placed"], 100);
    assert!(json["cost"]["transactions_per_checkout"]["order"].is_number());
    let text = std::fs::read_to_string(dir.join("report.txt"))?;
    assert!(text.contains("POST /api/v1/orders"));
    assert!(text.contains("what one checkout costs"), "{text}");
    assert!(std::fs::read_to_string(dir.join("report.svg"))?.contains("<polyline"));
    std::fs::remove_dir_all(&dir)?;

    // Restocking added to available and received alike.
    let inventory =
        sqlx::PgPool::connect(stack.database_url(Service::Inventory).expect("db")).await?;
    let unbalanced: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.sku, p.stock_received, p.available, \
           COALESCE(SUM(l.quantity) FILTER (WHERE r.status IN ('RESERVED', 'COMMITTED')), 0)::bigint \
         FROM products p \
         LEFT JOIN reservation_lines l ON l.sku = p.sku \
         LEFT JOIN reservations r ON r.order_id = l.order_id \
         GROUP BY p.sku, p.stock_received, p.available \
         HAVING p.stock_received <> p.available \
           + COALESCE(SUM(l.quantity) FILTER (WHERE r.status IN ('RESERVED', 'COMMITTED')), 0)",
    )
    .fetch_all(&inventory)
    .await?;
    assert!(unbalanced.is_empty(), "stock not conserved: {unbalanced:?}");
    inventory.close().await;

    stack.stop().await
}
