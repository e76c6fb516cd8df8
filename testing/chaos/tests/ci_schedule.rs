//! The two CI chaos schedules, end to end: about 1 000 checkouts while every
//! process is killed and every link, database and the PSP misbehave, then
//! 360 while the broker is killed and restarted. A run fails on
//! any violation, any order left non-terminal, or a system that does not go
//! quiet in time.

use std::path::PathBuf;

use shipshape_chaos::{RunnerOptions, Schedule, run};

async fn nothing_is_lost_under(name: &str, least_orders: u64) {
    let schedule = Schedule::read(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("schedules/{name}.toml")),
    )
    .expect("the schedule");
    let bin_dir = shipshape_testkit::stack::default_bin_dir().expect("the binaries");
    let out_dir = bin_dir.join("chaos").join(format!(
        "{name}-{}",
        shipshape_testkit::stack::test_database_prefix()
    ));
    let report = run(
        &schedule,
        &RunnerOptions {
            bin_dir,
            out_dir: out_dir.clone(),
            progress: true,
        },
    )
    .await
    .expect("the chaos run happens");
    println!("{}", report.render_text());
    println!("report and logs: {}", out_dir.display());
    assert!(
        report.orders_placed() >= least_orders,
        "at least {least_orders} orders placed: {}",
        report.orders_placed()
    );
    assert!(
        report
            .faults
            .iter()
            .all(|fault| fault.errors.is_empty() && fault.ended_at_secs.is_some()),
        "every fault was applied and undone"
    );
    assert!(
        report.passed(),
        "the chaos run failed; see the report above and {}",
        out_dir.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_under_the_ci_schedule() {
    nothing_is_lost_under("ci", 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_the_broker_restarts() {
    nothing_is_lost_under("ci-broker", 120).await;
}
