//! The schedules shipped in `testing/chaos/schedules/` are valid, and the two CI
//! runs together apply every kind of fault the runner knows, to every
//! process.

use std::path::PathBuf;

use shipshape_chaos::Schedule;
use shipshape_chaos::schedule::{Action, LINKS};
use shipshape_faultproxy::Fault;
use shipshape_testkit::stack::Service;

fn shipped(name: &str) -> Schedule {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schedules")
        .join(format!("{name}.toml"));
    Schedule::read(&path).unwrap_or_else(|e| panic!("{name}.toml: {e:#}"))
}

#[test]
fn the_ci_schedules_apply_every_kind_of_fault_to_every_part() {
    let ci = shipped("ci");
    let broker = shipped("ci-broker");
    let mut kinds = ci.kinds();
    kinds.extend(broker.kinds());
    kinds.sort_unstable();
    kinds.dedup();
    assert!(
        (900..=1100).contains(&ci.orders),
        "about 1 000 orders: {}",
        ci.orders
    );
    assert!(
        ci.load_duration().as_secs() + broker.load_duration().as_secs() <= 240,
        "a few minutes"
    );
    assert_eq!(
        kinds,
        [
            "broker-pause",
            "broker-restart",
            "kill",
            "kill-connections",
            "network",
            "psp",
            "scale-out",
            "terminate"
        ]
    );
    let actions: Vec<&Action> = ci.faults.iter().map(|f| &f.action).collect();
    for service in Service::ALL {
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Kill { replica, .. } if replica.service == service)),
            "{service} is SIGKILLed"
        );
    }
    for service in Service::WITH_DATABASE {
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::KillConnections { service: s } if *s == service)),
            "{service}'s sessions are ended"
        );
    }
    let effects: Vec<Fault> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Network { effect, .. } => Some(*effect),
            _ => None,
        })
        .collect();
    assert!(effects.iter().any(|e| matches!(e, Fault::Latency(_))));
    for effect in [Fault::Drop, Fault::Reset, Fault::Blackhole] {
        assert!(effects.contains(&effect), "{effect:?} on some link");
    }
    assert!(
        ci.links().iter().any(|link| LINKS
            .iter()
            .any(|(name, l)| l == link && name.ends_with("-db"))),
        "a database is made unreachable"
    );
    let psp: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Psp { faults, .. } => Some(*faults),
            _ => None,
        })
        .collect();
    assert!(psp.iter().any(|f| f.error_rate > 0.0), "PSP errors");
    assert!(psp.iter().any(|f| f.latency_ms > 0), "PSP latency spikes");
    assert!(
        psp.iter().any(|f| f.lose_response_rate > 0.0),
        "charges whose answer is lost"
    );
}

#[test]
fn the_broker_schedule_restarts_the_broker_while_every_consumer_restarts() {
    let broker = shipped("ci-broker");
    let actions: Vec<&Action> = broker.faults.iter().map(|f| &f.action).collect();
    assert!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::BrokerRestart { .. }))
            .count()
            >= 2,
        "the broker is killed and restarted more than once"
    );
    for service in Service::WITH_DATABASE {
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::Terminate { replica, .. } if replica.service == service)
            ),
            "{service} is restarted"
        );
    }
}

#[test]
fn the_broker_schedule_runs_two_replicas_kills_one_and_scales_out() {
    let broker = shipped("ci-broker");
    assert_eq!(broker.replicas, 2);
    assert!(broker.max_replicas() > broker.replicas, "a scale-out");
    let actions: Vec<&Action> = broker.faults.iter().map(|f| &f.action).collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Kill { replica, .. } if replica.index == 1)),
        "a second replica is SIGKILLed while the first runs on"
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::BrokerPause { .. })),
        "the broker is frozen"
    );
}

#[test]
fn the_long_schedule_places_ten_thousand_orders_under_every_fault_of_the_main_ci_run() {
    let long = shipped("long");
    assert_eq!(long.orders, 10_000);
    assert_eq!(long.kinds(), shipped("ci").kinds());
}

#[test]
fn the_documented_example_schedule_is_valid() {
    let page = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/fault-injection.md"),
    )
    .expect("docs/fault-injection.md");
    let section = &page[page.find("## Schedules").expect("a Schedules section")..];
    let start = section.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").expect("its end")];
    let schedule = Schedule::parse(example, "docs-example")
        .expect("the example in docs/fault-injection.md parses");
    assert_eq!(schedule.name, "mine");
    assert_eq!(
        schedule.kinds(),
        ["kill", "kill-connections", "network", "psp"]
    );
}
