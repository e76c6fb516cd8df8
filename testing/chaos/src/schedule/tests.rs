//! Tests of reading, validating and describing schedules, and of their
//! timeline.

use super::*;

const LOAD: &str = "[load]\nrate = 5.0\norders = 500\n";

fn parse(faults: &str) -> anyhow::Result<Schedule> {
    Schedule::parse(&format!("{LOAD}{faults}"), "test")
}

fn error(faults: &str) -> String {
    format!("{:#}", parse(faults).expect_err("the schedule is refused"))
}

#[test]
fn reads_every_kind_of_fault() {
    let schedule = parse(
        r#"
[[fault]]
kind = "kill"
service = "psp"
at_secs = 5
restart_after_secs = 2.5
[[fault]]
kind = "terminate"
service = "order"
at_secs = 6
restart_after_secs = 1
[[fault]]
kind = "broker-restart"
at_secs = 10
down_secs = 4
[[fault]]
kind = "kill-connections"
database = "inventory"
at_secs = 12
[[fault]]
kind = "network"
link = "payment-db"
effect = "blackhole"
at_secs = 20
for_secs = 3
[[fault]]
kind = "network"
link = "order->inventory"
effect = "latency"
latency_ms = 300
at_secs = 20
for_secs = 3
[[fault]]
kind = "psp"
at_secs = 30
for_secs = 10
error_rate = 0.2
lose_response_rate = 0.1
"#,
    )
    .expect("a valid schedule");
    assert_eq!(schedule.name, "test");
    assert_eq!(schedule.load_duration(), Duration::from_secs(100));
    assert_eq!(schedule.convergence_timeout, Duration::from_secs(300));
    let actions: Vec<&Action> = schedule.faults.iter().map(|f| &f.action).collect();
    assert_eq!(
        actions,
        [
            &Action::Kill {
                replica: Service::Psp.into(),
                down: Duration::from_millis(2500)
            },
            &Action::Terminate {
                replica: Service::Order.into(),
                down: Duration::from_secs(1)
            },
            &Action::BrokerRestart {
                down: Duration::from_secs(4)
            },
            &Action::KillConnections {
                service: Service::Inventory
            },
            &Action::Network {
                link: Link::Database(Service::Payment),
                effect: NetworkFault::Blackhole,
                lasting: Duration::from_secs(3)
            },
            &Action::Network {
                link: Link::OrderToInventory,
                effect: NetworkFault::Latency(Duration::from_millis(300)),
                lasting: Duration::from_secs(3)
            },
            &Action::Psp {
                faults: PspFaults {
                    latency_ms: 0,
                    error_rate: 0.2,
                    lose_response_rate: 0.1
                },
                lasting: Duration::from_secs(10)
            },
        ]
    );
    assert_eq!(
        schedule.links(),
        [Link::OrderToInventory, Link::Database(Service::Payment)]
    );
    assert_eq!(
        schedule.kinds(),
        [
            "broker-restart",
            "kill",
            "kill-connections",
            "network",
            "psp",
            "terminate"
        ]
    );
}

#[test]
fn the_timeline_ends_a_fault_before_starting_the_next_on_the_same_instant() {
    let schedule = parse(
        r#"
[[fault]]
kind = "network"
link = "broker"
effect = "drop"
at_secs = 20
for_secs = 5
[[fault]]
kind = "network"
link = "broker"
effect = "blackhole"
at_secs = 10
for_secs = 10
[[fault]]
kind = "kill-connections"
database = "order"
at_secs = 15
"#,
    )
    .expect("adjacent faults on one link are fine");
    let steps: Vec<(u64, usize, Edge)> = schedule
        .timeline()
        .iter()
        .map(|s| (s.at.as_secs(), s.fault, s.edge))
        .collect();
    assert_eq!(
        steps,
        [
            (10, 1, Edge::Begin),
            (15, 2, Edge::Begin),
            (20, 1, Edge::End),
            (20, 0, Edge::Begin),
            (25, 0, Edge::End),
        ]
    );
}

#[test]
fn refuses_overlapping_faults_on_one_target() {
    let overlap = error(
        r#"
[[fault]]
kind = "kill"
service = "payment"
at_secs = 10
restart_after_secs = 5
[[fault]]
kind = "terminate"
service = "payment"
at_secs = 12
restart_after_secs = 1
"#,
    );
    assert!(
        overlap.contains("#1") && overlap.contains("#2"),
        "{overlap}"
    );
    let psp = error(
        r#"
[[fault]]
kind = "psp"
at_secs = 10
for_secs = 5
latency_ms = 100
[[fault]]
kind = "kill"
service = "psp-simulator"
at_secs = 14
restart_after_secs = 1
"#,
    );
    assert!(psp.contains("overlap"), "{psp}");
}

#[test]
fn replicas_are_killed_one_by_one_and_scale_out_counts_toward_the_ports() {
    let schedule = Schedule::parse(
        r#"
replicas = 2
[load]
rate = 5.0
orders = 500

[[fault]]
kind = "kill"
service = "inventory"
replica = 1
at_secs = 10
restart_after_secs = 5

[[fault]]
kind = "terminate"
service = "inventory"
at_secs = 12
restart_after_secs = 5

[[fault]]
kind = "scale-out"
service = "shipping"
at_secs = 20

[[fault]]
kind = "scale-out"
service = "shipping"
at_secs = 30

[[fault]]
kind = "broker-pause"
at_secs = 40
for_secs = 3
"#,
        "replicas",
    )
    .expect("two replicas of inventory may be down at once, one by each fault");
    assert_eq!(schedule.replicas, 2);
    assert_eq!(schedule.max_replicas(), 4, "two added to shipping's two");
    assert_eq!(
        schedule.faults[0].action,
        Action::Kill {
            replica: Replica::new(Service::Inventory, 1),
            down: Duration::from_secs(5)
        }
    );
    assert_eq!(schedule.faults[2].end(), None, "a scale-out stays");
    assert_eq!(schedule.faults[4].end(), Some(Duration::from_secs(43)));
    assert!(schedule.kinds().contains(&"broker-pause"));
    let paused_twice = Schedule::parse(
        "[load]\nrate = 5.0\norders = 500\n[[fault]]\nkind = \"broker-pause\"\nat_secs = 1\nfor_secs = 5\n[[fault]]\nkind = \"broker-restart\"\nat_secs = 3\ndown_secs = 1\n",
        "x",
    )
    .expect_err("the broker is held by one fault at a time");
    assert!(format!("{paused_twice:#}").contains("overlap"));
    assert!(
        Schedule::parse("replicas = 9\n[load]\nrate = 5.0\norders = 5\n", "x").is_err(),
        "at most four"
    );
}

#[test]
fn refuses_what_a_run_would_trip_over() {
    let cases = [
        (
            "[[fault]]\nkind = \"kill\"\nservice = \"billing\"\nat_secs = 1\nrestart_after_secs = 1\n",
            "unknown service `billing`",
        ),
        (
            "[[fault]]\nkind = \"kill-connections\"\ndatabase = \"gateway\"\nat_secs = 1\n",
            "gateway has no database",
        ),
        (
            "[[fault]]\nkind = \"network\"\nlink = \"order->payment\"\neffect = \"drop\"\nat_secs = 1\nfor_secs = 1\n",
            "unknown link",
        ),
        (
            "[[fault]]\nkind = \"network\"\nlink = \"broker\"\neffect = \"latency\"\nat_secs = 1\nfor_secs = 1\n",
            "needs latency_ms",
        ),
        (
            "[[fault]]\nkind = \"network\"\nlink = \"broker\"\neffect = \"jitter\"\nat_secs = 1\nfor_secs = 1\n",
            "unknown effect",
        ),
        (
            "[[fault]]\nkind = \"psp\"\nat_secs = 1\nfor_secs = 1\nerror_rate = 1.5\n",
            "between 0 and 1",
        ),
        (
            "[[fault]]\nkind = \"psp\"\nat_secs = 1\nfor_secs = 1\n",
            "needs latency_ms",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nat_secs = 101\nrestart_after_secs = 1\n",
            "at most 100 s",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nat_secs = -1\nrestart_after_secs = 1\n",
            "≥ 0",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nat_secs = 1\nrestart_after_secs = 0\n",
            "more than 0 s",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nat_secs = 1\nrestart_after = 1\n",
            "unknown field",
        ),
        (
            "[[fault]]\nkind = \"reboot\"\nat_secs = 1\n",
            "unknown variant",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nservice = \"order\"\nreplica = 1\nat_secs = 1\nrestart_after_secs = 1\n",
            "starts 1 order replica(s)",
        ),
        (
            "[[fault]]\nkind = \"scale-out\"\nservice = \"gateway\"\nat_secs = 1\n",
            "only order, inventory, payment and shipping scale out",
        ),
        (
            "[[fault]]\nkind = \"broker-pause\"\nat_secs = 1\nfor_secs = 0\n",
            "more than 0 s",
        ),
        (
            "[[fault]]\nkind = \"scale-out\"\nservice = \"order\"\nat_secs = 1\n[[fault]]\nkind = \"network\"\nlink = \"gateway->order\"\neffect = \"drop\"\nat_secs = 1\nfor_secs = 1\n",
            "needs one replica",
        ),
    ];
    for (faults, expected) in cases {
        let message = error(faults);
        assert!(
            message.contains(expected),
            "{faults}: expected `{expected}` in `{message}`"
        );
    }
    for (load, expected) in [
        (
            "broker = \"memory\"\n[load]\nrate = 5.0\norders = 10\n",
            "unknown field `broker`",
        ),
        ("[load]\nrate = 0.0\norders = 10\n", "load.rate"),
        ("[load]\nrate = 5.0\norders = 0\n", "load.orders"),
        ("[load]\nrate = 5.0\n", "missing field `orders`"),
    ] {
        let message = format!("{:#}", Schedule::parse(load, "x").expect_err(load));
        assert!(message.contains(expected), "{load}: {message}");
    }
}

#[test]
fn describes_each_fault_for_the_report() {
    let blackhole = Action::Network {
        link: Link::Database(Service::Shipping),
        effect: NetworkFault::Blackhole,
        lasting: Duration::from_secs(4),
    };
    assert_eq!(blackhole.to_string(), "blackhole on shipping-db for 4 s");
    let kill = Action::Kill {
        replica: Service::Psp.into(),
        down: Duration::from_millis(1500),
    };
    assert_eq!(
        kill.to_string(),
        "SIGKILL psp-simulator, restart after 1.5 s"
    );
}
