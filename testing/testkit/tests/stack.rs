//! The stack's process management, end to end, with a stand-in binary for
//! each service (`shipshape-testkit-fake-service`) and the real Postgres and
//! broker: wiring, readiness, fail-fast, kill and restart, graceful stop and
//! cleanup of the databases.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde_json::Value;
use shipshape_testkit::http::{StatusCode, get_json};
use shipshape_testkit::postgres;
use shipshape_testkit::stack::vars;
use shipshape_testkit::{Service, Stack, StackOptions};
use sqlx::{Connection, PgConnection};

/// Options whose "service binaries" are all the fake service, and the
/// scratch directory holding those and the logs (for [`clean_up`]).
fn fake_options() -> anyhow::Result<(StackOptions, PathBuf)> {
    let fake = PathBuf::from(env!("CARGO_BIN_EXE_shipshape-testkit-fake-service"));
    let mut options = StackOptions::for_tests()?;
    // Cargo's scratch directory for integration tests: inside the target
    // directory, so logs stay around for a look after a failure.
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&options.database_prefix);
    let bin_dir = scratch.join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    for service in Service::ALL {
        let link = bin_dir.join(service.binary());
        if !link.exists() {
            std::os::unix::fs::symlink(&fake, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    options.log_dir = scratch.join("logs");
    options.bin_dir = bin_dir;
    Ok((options, scratch))
}

/// Removes a passed test's scratch directory (a failed one's stays, logs
/// and all).
fn clean_up(scratch: PathBuf) -> anyhow::Result<()> {
    std::fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))
}

async fn databases_with_prefix(prefix: &str) -> anyhow::Result<Vec<String>> {
    let admin = postgres::ensure_server().await?;
    let mut connection = PgConnection::connect(&admin).await?;
    let names = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
    )
    .bind(prefix)
    .fetch_all(&mut connection)
    .await?;
    connection.close().await?;
    Ok(names)
}

async fn env_of(stack: &Stack, service: Service) -> anyhow::Result<Value> {
    let (status, env) = get_json(&format!("{}/env", stack.ops_url(service))).await?;
    anyhow::ensure!(status == StatusCode::OK, "GET /env answered {status}");
    Ok(env)
}

fn is_gone(pid: u32) -> bool {
    let pid = Pid::from_raw(i32::try_from(pid).expect("pid"));
    kill(pid, None) == Err(Errno::ESRCH)
}

#[tokio::test]
async fn starts_wires_restarts_and_stops_every_process() -> anyhow::Result<()> {
    let (options, scratch) = fake_options()?;
    let options = options.with_env(Service::Order, vars::SAGA_DEADLINE_MS, "1234");
    let prefix = format!("{}_", options.database_prefix);
    let mut stack = Stack::start(options).await?;

    // Each process got its contract; overrides apply to their service only.
    let order = env_of(&stack, Service::Order).await?;
    assert_eq!(order[vars::SAGA_DEADLINE_MS], "1234");
    assert_eq!(
        order[vars::DATABASE_URL].as_str(),
        stack.database_url(Service::Order)
    );
    assert_eq!(
        order[vars::KAFKA_BROKERS].as_str(),
        Some(stack.broker_address().as_str())
    );
    assert_eq!(order[vars::KAFKA_SESSION_TIMEOUT_MS], "6000");
    assert_eq!(
        order[vars::KAFKA_TOPIC_PREFIX].as_str().unwrap_or_default(),
        stack.topic_prefix()
    );
    let gateway = env_of(&stack, Service::Gateway).await?;
    assert_eq!(gateway[vars::SAGA_DEADLINE_MS], Value::Null);
    assert_eq!(
        gateway[vars::ORDER_URL].as_str(),
        stack.grpc_url(Service::Order).as_deref()
    );
    let payment = env_of(&stack, Service::Payment).await?;
    assert_eq!(
        payment[vars::PSP_URL].as_str(),
        Some(stack.psp_url().as_str())
    );

    // Four databases exist, and each role can use its own.
    assert_eq!(databases_with_prefix(&prefix).await?.len(), 4);
    for service in Service::WITH_DATABASE {
        let url = stack.database_url(service).context("a database URL")?;
        PgConnection::connect(url).await?.close().await?;
    }
    tokio::net::TcpStream::connect(stack.broker_address()).await?;

    // A crash, then a restart with the same environment.
    let first = stack.pid(Service::Inventory).context("a pid")?;
    stack.kill(Service::Inventory)?;
    assert!(is_gone(first));
    let exited = stack.exited()?;
    assert_eq!(exited.len(), 1);
    assert_eq!(exited[0].0, Service::Inventory.into());
    stack.start_service(Service::Inventory).await?;
    assert_ne!(stack.pid(Service::Inventory), Some(first));
    assert!(stack.exited()?.is_empty());
    assert!(
        stack.start_service(Service::Inventory).await.is_err(),
        "a running service is not started twice"
    );

    // A graceful stop, then a restart.
    let status = stack.terminate(Service::Shipping).await?;
    assert!(status.success(), "{status}");
    stack.start_service(Service::Shipping).await?;

    let log = std::fs::read_to_string(stack.log_path(Service::Inventory))?;
    assert_eq!(
        log.matches("--- shipshape-testkit: starting inventory")
            .count(),
        2
    );

    let pids: Vec<u32> = Service::ALL.iter().filter_map(|&s| stack.pid(s)).collect();
    stack.stop().await?;
    assert!(pids.iter().all(|&pid| is_gone(pid)));
    assert!(databases_with_prefix(&prefix).await?.is_empty());
    clean_up(scratch)
}

#[tokio::test]
async fn dropping_a_stack_kills_everything_and_drops_its_databases() -> anyhow::Result<()> {
    let (options, scratch) = fake_options()?;
    // Its own broker, which must go with it.
    let options = options.with_own_broker();
    let prefix = format!("{}_", options.database_prefix);
    let stack = Stack::start(options).await?;
    let pids: Vec<u32> = Service::ALL.iter().filter_map(|&s| stack.pid(s)).collect();
    assert_eq!(pids.len(), 6);
    let broker = stack.broker_address();
    drop(stack);
    assert!(pids.iter().all(|&pid| is_gone(pid)));
    assert!(tokio::net::TcpStream::connect(broker).await.is_err());
    assert!(databases_with_prefix(&prefix).await?.is_empty());
    clean_up(scratch)
}

#[tokio::test]
async fn a_process_that_exits_during_start_fails_the_start_at_once() -> anyhow::Result<()> {
    let (options, scratch) = fake_options()?;
    let options = options.with_env(Service::Payment, "FAKE_FAIL_AT_START", "1");
    let prefix = format!("{}_", options.database_prefix);
    let started = std::time::Instant::now();
    let error = Stack::start(options)
        .await
        .err()
        .context("the start fails")?;
    let message = format!("{error:#}");
    assert!(
        message.contains("payment exited before it was ready"),
        "{message}"
    );
    assert!(
        message.contains("failing at start"),
        "the log is quoted: {message}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(databases_with_prefix(&prefix).await?.is_empty());
    clean_up(scratch)
}

#[tokio::test]
async fn a_process_that_never_gets_ready_is_named_with_its_log() -> anyhow::Result<()> {
    let (options, scratch) = fake_options()?;
    let mut options = options.with_env(Service::Shipping, "FAKE_NEVER_READY", "1");
    options.ready_timeout = Duration::from_secs(2);
    let error = Stack::start(options)
        .await
        .err()
        .context("the start fails")?;
    let message = format!("{error:#}");
    assert!(
        message.contains("not ready within 2s: shipping"),
        "{message}"
    );
    assert!(
        message.contains("503"),
        "the last answer is quoted: {message}"
    );
    assert!(
        message.contains("ops server on"),
        "the log is quoted: {message}"
    );
    clean_up(scratch)
}
