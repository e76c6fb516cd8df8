//! Tests of `broker`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shipshape_kafka::Password;

use super::config::cluster_id;
use super::*;
use crate::scratch::ScratchDir;

#[test]
fn cluster_ids_are_22_url_safe_characters() {
    let a = cluster_id();
    assert_eq!(a.len(), 22);
    assert!(
        a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_ne!(a, cluster_id());
    // One id in 64 would start with `-` if nothing prevented it.
    assert!((0..2000).all(|_| !cluster_id().starts_with('-')));
}

/// A broker on 19092 (and 19093 for its controller) with its data in
/// `/data`.
fn config() -> BrokerConfig {
    BrokerConfig::new(
        19092,
        19093,
        PathBuf::from("/data"),
        PathBuf::from("/b.log"),
    )
}

/// Fails unless the `server.properties` of `config` has each of `lines`.
fn assert_properties(config: &BrokerConfig, lines: &[&str]) {
    let properties = config.server_properties(&Password::new("s3cret"));
    for line in lines {
        assert!(
            properties.lines().any(|l| l == *line),
            "{line} missing in:\n{properties}"
        );
    }
}

#[test]
fn the_configuration_listens_on_loopback_only() {
    let config = BrokerConfig {
        advertised_port: 29092,
        ..config()
    };
    assert_properties(
        &config,
        &[
            "listeners=CLIENTS://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
            "advertised.listeners=CLIENTS://127.0.0.1:29092",
            "listener.security.protocol.map=CLIENTS:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "super.users=User:admin",
            "allow.everyone.if.no.acl.found=false",
            "controller.quorum.voters=1@127.0.0.1:19093",
            "log.dirs=/data/kraft-logs",
            "offsets.topic.replication.factor=1",
            "group.initial.rebalance.delay.ms=0",
        ],
    );
}

#[test]
fn with_tls_the_client_listener_is_sasl_ssl_with_inline_pem_stores() {
    let config = BrokerConfig {
        tls: Some(BrokerTls {
            certificate: "-----BEGIN CERTIFICATE-----\nAAA\nBBB\n-----END CERTIFICATE-----\n"
                .to_owned(),
            key: "-----BEGIN PRIVATE KEY-----\nCCC\n-----END PRIVATE KEY-----\n".to_owned(),
            ca: "-----BEGIN CERTIFICATE-----\nDDD\n-----END CERTIFICATE-----\n".to_owned(),
            ca_path: PathBuf::from("/tls/ca.crt"),
        }),
        ..config()
    };
    assert_properties(
        &config,
        &[
            "listener.security.protocol.map=CLIENTS:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            "ssl.keystore.type=PEM",
            // One line each: Java's properties turn `\n` back into line
            // breaks.
            r"ssl.keystore.certificate.chain=-----BEGIN CERTIFICATE-----\nAAA\nBBB\n-----END CERTIFICATE-----",
            r"ssl.keystore.key=-----BEGIN PRIVATE KEY-----\nCCC\n-----END PRIVATE KEY-----",
            "ssl.truststore.type=PEM",
            r"ssl.truststore.certificates=-----BEGIN CERTIFICATE-----\nDDD\n-----END CERTIFICATE-----",
        ],
    );
    assert!(
        !format!("{:?}", config.tls).contains("CCC"),
        "the key stays out of Debug output"
    );
}

async fn started(dir: &ScratchDir) -> Broker {
    let installation = Installation::install().expect("Java and the Kafka jars");
    Broker::start_in(&installation, dir.path())
        .await
        .expect("the broker starts")
}

#[tokio::test]
async fn starts_accepts_connections_and_stops() {
    let dir = ScratchDir::new("broker");
    let broker = started(&dir).await;
    let port = broker.port();
    tokio::net::TcpStream::connect(broker.address())
        .await
        .expect("the broker accepts TCP connections");
    // The listener accepts a moment before the broker logs that it has
    // started; the log must say so within seconds.
    let log = dir.path().join("broker.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut output = String::new();
    while Instant::now() < deadline {
        output = std::fs::read_to_string(&log).expect("the log");
        if output.contains("Kafka Server started") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        output.contains("Kafka Server started"),
        "the broker logs to its log file: {output}"
    );
    broker.stop().await.expect("a controlled shutdown");
    assert!(
        !crate::ports::in_use(port),
        "the port is free after the stop"
    );
}

#[tokio::test]
async fn a_killed_broker_restarts_on_its_data() {
    let dir = ScratchDir::new("broker");
    let mut broker = started(&dir).await;
    broker.kill().expect("SIGKILL");
    let broker = broker.restart().await.expect("started again");
    let log = std::fs::read_to_string(dir.path().join("broker.log")).expect("the log");
    assert_eq!(
        log.matches("--- shipshape-testkit: starting broker")
            .count(),
        2,
        "one log, two starts"
    );
    broker.stop().await.expect("a controlled shutdown");
}

#[tokio::test]
async fn refuses_a_port_that_is_in_use() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = taken.local_addr().expect("address").port();
    let dir = ScratchDir::new("broker");
    let installation = Installation::install().expect("Java and the Kafka jars");
    let config = BrokerConfig::new(
        port,
        crate::free_port(),
        dir.path().join("data"),
        dir.path().join("broker.log"),
    );
    let error = Broker::start(&installation, config)
        .await
        .expect_err("the port is taken");
    assert!(format!("{error:#}").contains("already in use"));
}
