//! Tests of `stack`.

use std::process::Command;

use shipshape_kafka::{Login, Password};

use super::service::all_replicas;
use super::*;
use crate::postgres;

/// A stack with no processes, to check what it would give them.
fn idle_stack(options: StackOptions) -> Stack {
    let ports = PortMap::standard(options.max_replicas);
    let mut database_urls = BTreeMap::new();
    for service in Service::WITH_DATABASE {
        database_urls.insert(service, format!("postgres://db/{}", service.name()));
    }
    Stack {
        options,
        ports,
        admin_url: postgres::DEFAULT_ADMIN_URL.to_owned(),
        database_urls,
        databases: Vec::new(),
        broker: None,
        broker_admin: None,
        broker_logins: BTreeMap::new(),
        pki: None,
        broker_tls: None,
        installation: Some(Installation::unchecked()),
        processes: BTreeMap::new(),
        proxies: BTreeMap::new(),
    }
}

#[test]
fn services_follow_the_port_and_naming_conventions() {
    let ops: Vec<u16> = Service::ALL.map(Service::standard_ops_port).to_vec();
    assert_eq!(ops, [9100, 9101, 9102, 9103, 9104, 9105]);
    assert_eq!(Service::Psp.binary(), "shipshape-psp-simulator");
    assert_eq!(Service::Order.role().as_deref(), Some("shipshape_order"));
    assert_eq!(Service::Gateway.role(), None);
    for service in Service::ALL {
        assert_eq!(service.binary(), format!("shipshape-{service}"));
    }
}

#[test]
fn each_process_gets_the_contracted_environment() {
    let options = StackOptions::local("/bin", "/tmp").with_env(
        Service::Order,
        vars::SAGA_DEADLINE_MS,
        "2000",
    );
    let stack = idle_stack(options);

    let order = stack.env_for(Service::Order);
    assert_eq!(order[vars::OPS_ADDR], "127.0.0.1:9101");
    assert_eq!(order[vars::GRPC_ADDR], "127.0.0.1:50051");
    assert_eq!(order[vars::INVENTORY_URL], "http://127.0.0.1:50052");
    assert_eq!(order[vars::DATABASE_URL], "postgres://db/order");
    assert_eq!(order[vars::KAFKA_BROKERS], "127.0.0.1:9092");
    assert_eq!(order[vars::KAFKA_SESSION_TIMEOUT_MS], "6000");
    assert_eq!(order[vars::KAFKA_TOPIC_PARTITIONS], "3");
    assert_eq!(order[vars::SAGA_DEADLINE_MS], "2000");
    assert!(order.contains_key(vars::RUST_LOG));

    let gateway = stack.env_for(Service::Gateway);
    assert_eq!(gateway[vars::HTTP_ADDR], "127.0.0.1:8080");
    assert_eq!(gateway[vars::ORDER_URL], "http://127.0.0.1:50051");
    assert_eq!(gateway[vars::INVENTORY_URL], "http://127.0.0.1:50052");
    assert!(!gateway.contains_key(vars::DATABASE_URL));
    assert!(!gateway.contains_key(vars::SAGA_DEADLINE_MS));

    let payment = stack.env_for(Service::Payment);
    assert_eq!(payment[vars::PSP_URL], "http://127.0.0.1:8090");
    assert_eq!(payment[vars::OPS_ADDR], "127.0.0.1:9103");

    let psp = stack.env_for(Service::Psp);
    assert_eq!(psp[vars::HTTP_ADDR], "127.0.0.1:8090");
    assert_eq!(psp[vars::OPS_ADDR], "127.0.0.1:9105");
    assert!(!psp.contains_key(vars::KAFKA_BROKERS));

    assert_eq!(stack.gateway_url(), "http://127.0.0.1:8080");
    assert_eq!(stack.psp_url(), "http://127.0.0.1:8090");
    assert_eq!(stack.ops_url(Service::Shipping), "http://127.0.0.1:9104");
    assert_eq!(stack.broker_address(), "127.0.0.1:9092");
    assert_eq!(
        stack.grpc_url(Service::Inventory).as_deref(),
        Some("http://127.0.0.1:50052")
    );
    assert_eq!(stack.grpc_url(Service::Payment), None);
    assert_eq!(
        stack.log_path(Service::Psp),
        Path::new("/tmp/psp-simulator.log")
    );
}

#[test]
fn a_stack_on_a_shared_broker_names_its_topics_and_may_not_kill_it() {
    let mut options = StackOptions::local("/bin", "/tmp");
    options.broker = BrokerChoice::Shared {
        admin: Connection::sasl_plaintext(
            "127.0.0.1:39092",
            Login::scram("admin", Password::new("s3cret")),
        ),
        topic_prefix: "t0123abcd.".to_owned(),
    };
    let mut stack = idle_stack(options);
    stack.installation = None;

    let shipping = stack.env_for(Service::Shipping);
    assert_eq!(shipping[vars::KAFKA_BROKERS], "127.0.0.1:39092");
    assert_eq!(shipping[vars::KAFKA_TOPIC_PREFIX], "t0123abcd.");
    assert!(
        !stack
            .env_for(Service::Gateway)
            .contains_key(vars::KAFKA_TOPIC_PREFIX)
    );
    assert_eq!(stack.broker_address(), "127.0.0.1:39092");
    assert_eq!(stack.topic("order.events"), "t0123abcd.order.events");
    assert!(stack.broker_running());
    let error = stack.kill_broker().expect_err("shared").to_string();
    assert!(error.contains("with_own_broker"), "{error}");

    let own = idle_stack(StackOptions::local("/bin", "/tmp"));
    assert!(
        !own.env_for(Service::Order)
            .contains_key(vars::KAFKA_TOPIC_PREFIX)
    );
    assert_eq!(own.topic("order.events"), "order.events");
}

#[test]
fn a_proxied_broker_is_always_the_stacks_own() {
    let mut options = StackOptions::local("/bin", "/tmp");
    options.broker = BrokerChoice::Shared {
        admin: Connection::sasl_plaintext(
            "127.0.0.1:39092",
            Login::scram("admin", Password::new("s3cret")),
        ),
        topic_prefix: "t0123abcd.".to_owned(),
    };
    assert_eq!(options.with_proxy(Link::Broker).broker, BrokerChoice::Own);
}

#[test]
fn replicas_get_ports_of_their_own_and_clients_get_every_replica() {
    let options = StackOptions::local("/bin", "/tmp").with_replicas(2, 3);
    let stack = idle_stack(options);
    assert_eq!(stack.ports.ops(Replica::new(Service::Order, 1)), 9111);
    assert_eq!(stack.ports.ops(Replica::new(Service::Shipping, 2)), 9124);
    assert_eq!(
        stack
            .grpc_url(Replica::new(Service::Inventory, 2))
            .as_deref(),
        Some("http://127.0.0.1:50072")
    );
    assert_eq!(stack.grpc_url(Replica::new(Service::Payment, 1)), None);

    let second_order = stack.env_for(Replica::new(Service::Order, 1));
    assert_eq!(second_order[vars::GRPC_ADDR], "127.0.0.1:50061");
    assert_eq!(second_order[vars::OPS_ADDR], "127.0.0.1:9111");
    assert_eq!(
        second_order[vars::INVENTORY_URL],
        "http://127.0.0.1:50052,http://127.0.0.1:50062,http://127.0.0.1:50072"
    );
    let gateway = stack.env_for(Service::Gateway);
    assert_eq!(
        gateway[vars::ORDER_URL],
        "http://127.0.0.1:50051,http://127.0.0.1:50061,http://127.0.0.1:50071"
    );
    assert_eq!(gateway[vars::OPS_ADDR], "127.0.0.1:9100");
    assert_eq!(second_order[vars::KAFKA_TOPIC_PARTITIONS], "3");
    let ten = idle_stack(StackOptions::local("/bin", "/tmp").with_replicas(1, 10));
    assert_eq!(
        ten.env_for(Service::Shipping)[vars::KAFKA_TOPIC_PARTITIONS],
        "10"
    );
    assert_eq!(
        stack.log_path(Replica::new(Service::Payment, 1)),
        Path::new("/tmp/payment-1.log")
    );
    assert_eq!(
        stack.log_path(Service::Payment),
        Path::new("/tmp/payment.log")
    );
}

#[test]
fn one_gateway_and_one_psp_whatever_the_replica_count() {
    let replicas = all_replicas(2);
    let count = |service| replicas.iter().filter(|r| r.service == service).count();
    assert_eq!(count(Service::Gateway), 1);
    assert_eq!(count(Service::Psp), 1);
    for service in Service::REPLICATED {
        assert_eq!(count(service), 2, "{service}");
    }
    assert_eq!(Replica::new(Service::Order, 0).to_string(), "order");
    assert_eq!(Replica::new(Service::Order, 1).to_string(), "order-1");
}

#[test]
fn free_ports_are_all_different() {
    let ports = PortMap::free(2).expect("free ports");
    let mut all: Vec<u16> = ports.describe().into_iter().map(|(_, port)| port).collect();
    all.sort_unstable();
    all.dedup();
    // Gateway, PSP, broker and its controller; ops of 2 + 4 x 2
    // processes; gRPC of 2 replicas of order and inventory.
    assert_eq!(all.len(), 4 + 10 + 4);
}

#[test]
fn test_prefixes_are_random_and_marked_as_test_databases() {
    let a = test_database_prefix();
    let b = test_database_prefix();
    assert_ne!(a, b);
    assert!(a.starts_with(TEST_DATABASE_PREFIX));
    assert_eq!(a.len(), TEST_DATABASE_PREFIX.len() + 8);
}

#[tokio::test]
async fn missing_binaries_are_reported_with_the_fix() {
    let mut options = StackOptions::for_tests().expect("options");
    options.bin_dir = std::env::temp_dir().join("shipshape-no-binaries-here");
    let error = Stack::start(options).await.err().expect("no binaries");
    let message = format!("{error:#}");
    assert!(message.contains("shipshape-gateway"), "{message}");
    assert!(message.contains("cargo xtask test"), "{message}");
}

/// Set in the copy of [`a_test_binary_finds_the_profile_directory`]
/// that runs without [`BIN_DIR_VAR`].
const PROFILE_PROBE_VAR: &str = "SHIPSHAPE_TESTKIT_PROFILE_PROBE";

/// `cargo xtask test` sets [`BIN_DIR_VAR`], which bypasses the lookup
/// from the test binary's path, so the lookup runs in a copy of this
/// test started without it: the test checks both branches wherever it
/// runs, and there is no environment it passes in without checking.
#[test]
fn a_test_binary_finds_the_profile_directory() {
    let exe = std::env::current_exe().expect("the test binary's path");
    if std::env::var_os(PROFILE_PROBE_VAR).is_some() {
        // The copy: `<profile>/deps/<this binary>` gives `<profile>`.
        assert!(std::env::var_os(BIN_DIR_VAR).is_none());
        let dir = default_bin_dir().expect("bin dir");
        assert!(!dir.ends_with("deps"), "{}", dir.display());
        let name = exe.file_name().expect("the test binary's file name");
        assert_eq!(dir.join("deps").join(name), exe, "{}", dir.display());
    } else {
        // The variable wins when it is set.
        if let Some(set) = std::env::var_os(BIN_DIR_VAR) {
            assert_eq!(default_bin_dir().expect("bin dir"), PathBuf::from(set));
        }
        let module = module_path!();
        let name = module.split_once("::").map_or(module, |(_, path)| path);
        let name = format!("{name}::a_test_binary_finds_the_profile_directory");
        let output = Command::new(&exe)
            .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env_remove(BIN_DIR_VAR)
            .env(PROFILE_PROBE_VAR, "1")
            .output()
            .expect("running the test binary again");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the copy without {BIN_DIR_VAR} failed:\n{stdout}\n{stderr}"
        );
        // A filter that matched nothing would pass with 0 tests run.
        assert!(
            stdout.contains("1 passed"),
            "the copy did not run {name}:\n{stdout}\n{stderr}"
        );
    }
}
