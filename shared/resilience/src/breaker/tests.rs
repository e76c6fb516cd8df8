//! Tests of `breaker`.

use tonic::{Code, Status};
use tower::ServiceExt;

use super::*;
use crate::testing::{Fake, Metrics, fail, ok, slow};

const OPEN_FOR: Duration = Duration::from_secs(5);

async fn call<S>(service: &S) -> Result<(), ResilienceError<Status>>
where
    S: Service<(), Response = (), Error = ResilienceError<Status>> + Clone,
{
    service.clone().oneshot(()).await
}

fn failures(n: usize) -> impl Iterator<Item = crate::testing::Step> {
    std::iter::repeat_n(fail(Code::Unavailable), n)
}

fn successes(n: usize) -> impl Iterator<Item = crate::testing::Step> {
    std::iter::repeat_n(ok(), n)
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_minimum_calls_when_half_of_them_failed() {
    let fake = Fake::new(failures(9).chain([ok()]));
    let layer = BreakerLayer::new("inventory", BreakerConfig::default());
    let service = layer.layer(fake.wrapped());

    for _ in 0..9 {
        assert!(call(&service).await.is_err());
    }
    assert_eq!(layer.state(), BreakerState::Closed, "9 calls are too few");

    call(&service).await.unwrap();
    assert_eq!(layer.state(), BreakerState::Open);
    assert_eq!(fake.calls(), 10);
}

#[tokio::test(start_paused = true)]
async fn the_failure_rate_is_taken_over_a_sliding_window() {
    let fake = Fake::new(successes(11).chain(failures(10)));
    let layer = BreakerLayer::new("inventory", BreakerConfig::default());
    let service = layer.layer(fake.wrapped());

    for _ in 0..20 {
        let _ = call(&service).await;
    }
    assert_eq!(layer.state(), BreakerState::Closed, "9 failures of 20");

    // The oldest success leaves the window: 10 failures of 20.
    assert!(call(&service).await.is_err());
    assert_eq!(layer.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn refuses_calls_while_open_without_calling_the_downstream() {
    let metrics = Metrics::local();
    let fake = Fake::new(failures(10).chain([ok()]));
    let layer = BreakerLayer::new("inventory", BreakerConfig::default());
    let service = layer.layer(fake.wrapped());
    for _ in 0..10 {
        assert!(call(&service).await.is_err());
    }

    let result = call(&service).await;

    assert!(
        matches!(
            result,
            Err(ResilienceError::CircuitOpen {
                downstream: "inventory"
            })
        ),
        "{result:?}"
    );
    assert_eq!(fake.calls(), 10);
    assert_eq!(
        metrics.value(r#"shipshape_breaker_rejections_total{downstream="inventory"}"#),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn half_opens_after_the_open_period_and_closes_when_the_probes_succeed() {
    let metrics = Metrics::local();
    let fake = Fake::new(failures(10).chain([ok()]));
    let layer = BreakerLayer::new("inventory", BreakerConfig::default());
    let service = layer.layer(fake.wrapped());
    let gauge = r#"shipshape_breaker_state{downstream="inventory"}"#;
    assert_eq!(metrics.value(gauge), Some(0.0));
    for _ in 0..10 {
        assert!(call(&service).await.is_err());
    }
    assert_eq!(metrics.value(gauge), Some(1.0));

    tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
    assert_eq!(layer.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(layer.state(), BreakerState::HalfOpen);
    assert_eq!(metrics.value(gauge), Some(2.0));

    for probe in 1..=3 {
        call(&service).await.unwrap();
        let expected = if probe < 3 {
            BreakerState::HalfOpen
        } else {
            BreakerState::Closed
        };
        assert_eq!(layer.state(), expected, "after probe {probe}");
    }
    assert_eq!(metrics.value(gauge), Some(0.0));
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ] {
        let series = format!(
            r#"shipshape_breaker_transitions_total{{downstream="inventory",from="{from}",to="{to}"}}"#
        );
        assert_eq!(metrics.value(&series), Some(1.0), "{series}");
    }
}

#[tokio::test(start_paused = true)]
async fn closing_starts_a_fresh_window() {
    let fake = Fake::new(failures(10).chain(successes(3)).chain(failures(9)));
    let layer = BreakerLayer::new("inventory", BreakerConfig::default());
    let service = layer.layer(fake.wrapped());
    for _ in 0..10 {
        assert!(call(&service).await.is_err());
    }
    tokio::time::advance(OPEN_FOR).await;
    for _ in 0..3 {
        call(&service).await.unwrap();
    }
    assert_eq!(layer.state(), BreakerState::Closed);

    for _ in 0..9 {
        assert!(call(&service).await.is_err());
    }
    assert_eq!(layer.state(), BreakerState::Closed, "9 calls are too few");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_it_for_another_open_period() {
    let metrics = Metrics::local();
    let fake = Fake::new(failures(11).chain([ok()]));
    let layer = BreakerLayer::new("inventory", BreakerConfig::default());
    let service = layer.layer(fake.wrapped());
    for _ in 0..10 {
        assert!(call(&service).await.is_err());
    }
    tokio::time::advance(OPEN_FOR).await;

    assert!(call(&service).await.is_err());

    assert_eq!(layer.state(), BreakerState::Open);
    assert!(matches!(
        call(&service).await,
        Err(ResilienceError::CircuitOpen { .. })
    ));
    tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
    assert_eq!(layer.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(layer.state(), BreakerState::HalfOpen);
    assert_eq!(fake.calls(), 11);
    assert_eq!(
        metrics.value(
            r#"shipshape_breaker_transitions_total{downstream="inventory",from="half_open",to="open"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_only_the_probes_through() {
    let fake = Fake::new(failures(10).chain([slow(Duration::from_secs(1), ok())]));
    let layer = BreakerLayer::new("inventory", BreakerConfig::default());
    let service = layer.layer(fake.wrapped());
    for _ in 0..10 {
        assert!(call(&service).await.is_err());
    }
    tokio::time::advance(OPEN_FOR).await;
    let probes: Vec<_> = (0..3)
        .map(|_| tokio::spawn(service.clone().oneshot(())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;

    let result = call(&service).await;

    assert!(
        matches!(result, Err(ResilienceError::CircuitOpen { .. })),
        "{result:?}"
    );
    assert_eq!(fake.calls(), 13);
    for probe in probes {
        probe.await.unwrap().unwrap();
    }
    assert_eq!(layer.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_gives_its_slot_back() {
    let fake = Fake::new(failures(10).chain([slow(Duration::from_secs(1), ok())]));
    let layer = BreakerLayer::new(
        "inventory",
        BreakerConfig {
            half_open_probes: 1,
            ..BreakerConfig::default()
        },
    );
    let mut service = layer.layer(fake.wrapped());
    for _ in 0..10 {
        assert!(call(&service).await.is_err());
    }
    tokio::time::advance(OPEN_FOR).await;

    let abandoned = service.ready().await.unwrap().call(());
    assert!(matches!(
        call(&service).await,
        Err(ResilienceError::CircuitOpen { .. })
    ));
    drop(abandoned);

    call(&service).await.unwrap();
    assert_eq!(layer.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn client_errors_count_as_successes() {
    let client_errors = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
        Code::AlreadyExists,
    ];
    let fake = Fake::new(
        client_errors
            .iter()
            .cycle()
            .take(11)
            .map(|code| fail(*code))
            .chain(failures(9)),
    );
    let layer = BreakerLayer::new("inventory", BreakerConfig::default());
    let service = layer.layer(fake.wrapped());

    for _ in 0..20 {
        assert!(call(&service).await.is_err());
    }

    assert_eq!(layer.state(), BreakerState::Closed, "9 failures of 20");
    assert_eq!(fake.calls(), 20);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_refusals_are_not_counted() {
    // 10 refusals, 9 failures, 1 success. Counted as failures, the
    // refusals would open the breaker at once; counted as successes,
    // never (9 failures of 20); not counted, at the success (9 of 10).
    let mut script = std::iter::repeat_n(None, 10)
        .chain(std::iter::repeat_n(Some(Err(Code::Unavailable)), 9))
        .chain([Some(Ok(()))]);
    let inner = tower::service_fn(move |()| {
        let result = match script.next().flatten() {
            None => Err(ResilienceError::BulkheadFull {
                downstream: "inventory",
            }),
            Some(Ok(())) => Ok(()),
            Some(Err(code)) => Err(ResilienceError::Inner(Status::new(code, "down"))),
        };
        async move { result }
    });
    let layer = BreakerLayer::new("inventory", BreakerConfig::default());
    // Called in place: a clone would copy the script.
    let mut service = layer.layer(inner);

    for _ in 0..19 {
        assert!(service.ready().await.unwrap().call(()).await.is_err());
    }
    assert_eq!(layer.state(), BreakerState::Closed);

    service.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(layer.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn disabled_never_opens() {
    let fake = Fake::new(failures(1));
    let layer = BreakerLayer::new(
        "inventory",
        BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        },
    );
    let service = layer.layer(fake.wrapped());

    for _ in 0..30 {
        assert!(call(&service).await.is_err());
    }

    assert_eq!(layer.state(), BreakerState::Closed);
    assert_eq!(fake.calls(), 30);
}
