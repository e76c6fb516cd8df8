//! Tests of `cli`.

use clap::CommandFactory;
use clap::error::ErrorKind;

use super::*;

fn cli(line: &str) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("shipshape-loadtest").chain(line.split_whitespace()))
}

fn parse(line: &str, env: TokensFromEnv) -> anyhow::Result<Command> {
    cli(line)?.into_command(env)
}

#[test]
fn the_command_line_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn run_takes_an_open_model_with_a_ramp() {
    let Command::Run(run) = parse(
        "run --gateway http://gw:8080 --rate 50 --ramp-secs 10 --duration-secs 120 \
         --mix valid=1 --popularity zipf:1.1 --watch gateway=42 --watch order=43 \
         --out /tmp/r --quiet",
        TokensFromEnv::default(),
    )
    .expect("parsed") else {
        panic!("not run");
    };
    let o = &run.options;
    assert_eq!(o.gateway, "http://gw:8080");
    let Load::Open(schedule) = &o.load else {
        panic!("not open");
    };
    assert_eq!(schedule.duration(), Duration::from_secs(120));
    assert_eq!(schedule.peak(), 50.0);
    assert_eq!(schedule.expected_arrivals(), 50.0 * 115.0);
    assert_eq!(o.ramp, Duration::from_secs(10));
    assert_eq!(o.mix, "valid=1".parse::<Mix>().expect("mix"));
    assert_eq!(o.popularity, Popularity::Zipf(1.1));
    assert!(!o.progress);
    assert_eq!(
        run.watch.pids,
        [("gateway".to_owned(), 42), ("order".to_owned(), 43)]
    );
    assert!(run.watch.this_process);
    assert_eq!(run.out, Some(PathBuf::from("/tmp/r")));
    assert!(run.baseline.is_none());
}

#[test]
fn what_cargo_xtask_loadtest_and_the_docs_pass_parses() {
    // `cargo xtask loadtest` puts its own flags first, then the user's,
    // which may repeat one of them: the last value wins.
    let Command::Run(run) = parse(
        "run --gateway http://127.0.0.1:41234 --out /tmp/lt --watch gateway=7 \
         --watch broker=9 --watch-postgres shipshape_lt0a1b2c3d_ \
         --metrics order=http://127.0.0.1:9101 --metrics order-1=http://127.0.0.1:9201 \
         --stats-database-url postgres://postgres@127.0.0.1/postgres \
         --baseline-database-url postgres://postgres@127.0.0.1/postgres \
         --rate 20 --duration-secs 5 --out /tmp/mine",
        TokensFromEnv::default(),
    )
    .expect("parsed") else {
        panic!("not run");
    };
    assert_eq!(run.out, Some(PathBuf::from("/tmp/mine")));
    assert_eq!(
        run.watch.postgres_prefix.as_deref(),
        Some("shipshape_lt0a1b2c3d_")
    );
    assert!(run.baseline.is_some());
    assert_eq!(
        run.cost,
        CostSources {
            metrics: vec![
                ("order".to_owned(), "http://127.0.0.1:9101".to_owned()),
                ("order-1".to_owned(), "http://127.0.0.1:9201".to_owned()),
            ],
            postgres: Some((
                "postgres://postgres@127.0.0.1/postgres".to_owned(),
                "shipshape_lt0a1b2c3d_".to_owned()
            )),
        }
    );
    assert!(matches!(
        parse(
            "sequential --gateway http://127.0.0.1:41234 --orders 3",
            TokensFromEnv::default()
        ),
        Ok(Command::Sequential(_))
    ));
    assert!(matches!(
        parse(
            "baseline --database-url postgres://postgres@127.0.0.1/postgres --out /tmp/lt",
            TokensFromEnv::default()
        ),
        Ok(Command::Baseline(_, Some(_)))
    ));
    // As docs/load-testing.md shows it against a deployed gateway.
    for line in [
        "run --gateway https://shop.example.com --rate 20 --ramp-secs 30 \
         --duration-secs 600 --out report/",
        "capacity --gateway https://shop.example.com --step-secs 60",
        "baseline --database-url postgres://admin@db:5432/postgres",
    ] {
        assert!(parse(line, TokensFromEnv::default()).is_ok(), "{line}");
    }
}

#[test]
fn users_make_a_closed_model_and_exclude_a_rate() {
    let Command::Run(run) =
        parse("run --users 8 --duration-secs 5", TokensFromEnv::default()).expect("parsed")
    else {
        panic!("not run");
    };
    assert!(matches!(
        run.options.load,
        Load::Closed { users: 8, duration } if duration == Duration::from_secs(5)
    ));
    assert!(parse("run --users 8 --rate 3", TokensFromEnv::default()).is_err());
    assert!(parse("run --users 0", TokensFromEnv::default()).is_err());
}

#[test]
fn the_admin_token_comes_from_the_flag_or_the_environment() {
    let token = |line: &str, env: Option<&str>| {
        let env = TokensFromEnv {
            admin_token: env.map(str::to_owned),
            token: None,
        };
        match parse(line, env) {
            Ok(Command::Run(run)) => run.options.admin_token.map(|t| t.expose().to_owned()),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(token("run", None), None);
    assert_eq!(token("run", Some("from-env")).as_deref(), Some("from-env"));
    assert_eq!(
        token("run --admin-token=flag", Some("from-env")).as_deref(),
        Some("flag")
    );
    assert_eq!(token("run", Some("")), None);
}

#[test]
fn capacity_has_the_documented_defaults() {
    let Command::Capacity(capacity) = parse("capacity", TokensFromEnv::default()).expect("parsed")
    else {
        panic!("not capacity");
    };
    assert_eq!(
        capacity.steps,
        Steps {
            start: 10.0,
            step: 10.0,
            max: 500.0,
            refine: 2
        }
    );
    assert_eq!(capacity.slo, Slo::default());
    assert_eq!(capacity.step_duration, Duration::from_secs(30));
    assert_eq!(capacity.half_rate, None);

    let Command::Capacity(capacity) = parse(
        "capacity --start 20 --step 5 --max 80 --step-secs 15 --slo-p99-ms 100 \
         --max-error-rate 0.01 --half-rate-secs 60 --baseline-database-url \
         postgres://postgres@127.0.0.1/postgres --baseline-secs 20",
        TokensFromEnv::default(),
    )
    .expect("parsed") else {
        panic!("not capacity");
    };
    assert_eq!(capacity.steps.start, 20.0);
    assert_eq!(capacity.slo.saga_p99_ms, 100.0);
    assert_eq!(capacity.slo.max_error_rate, 0.01);
    assert_eq!(capacity.half_rate, Some(Duration::from_secs(60)));
    let baseline = capacity.load.baseline.expect("baseline");
    assert_eq!(baseline.duration, Duration::from_secs(20));
    assert!(parse("capacity --max-error-rate 2", TokensFromEnv::default()).is_err());
}

#[test]
fn the_defaults_are_those_of_the_library() {
    let Command::Run(run) = parse("run", TokensFromEnv::default()).expect("parsed") else {
        panic!("not run");
    };
    let library = RunOptions::new(DEFAULT_GATEWAY, run.options.load.clone());
    let o = &run.options;
    assert_eq!(o.gateway, library.gateway);
    assert_eq!(o.mix, library.mix);
    assert_eq!(o.popularity, library.popularity);
    assert_eq!(o.poll_interval, library.poll_interval);
    assert_eq!(o.order_timeout, library.order_timeout);
    assert_eq!(o.request_timeout, library.request_timeout);
    assert_eq!(o.max_in_flight, library.max_in_flight);
    assert_eq!(o.stock_target, library.stock_target);
    assert_eq!(o.progress, library.progress);
    let Load::Open(schedule) = &o.load else {
        panic!("not open");
    };
    assert_eq!(schedule.peak(), 10.0);
    assert_eq!(schedule.duration(), Duration::from_secs(60));

    let library = BaselineOptions::new("postgres://p@h/db");
    let Command::Run(run) = parse(
        "run --baseline-database-url postgres://p@h/db",
        TokensFromEnv::default(),
    )
    .expect("parsed") else {
        panic!("not run");
    };
    let baseline = run.baseline.expect("baseline");
    assert_eq!(
        (baseline.duration, baseline.clients),
        (library.duration, library.clients)
    );
    let Command::Baseline(options, _) = parse(
        "baseline --database-url postgres://p@h/db",
        TokensFromEnv::default(),
    )
    .expect("parsed") else {
        panic!("not baseline");
    };
    assert_eq!(
        (options.duration, options.clients),
        (library.duration, library.clients)
    );
}

#[test]
fn mistakes_are_reported() {
    for line in [
        "run --rate",
        "run --rate fast",
        "run --rate -1",
        "run --colour blue",
        "run stray",
        "run --watch gateway",
        "run --watch gateway=me",
        "run --ramp-secs -1",
        "run --max-in-flight 0",
        "run --stock-target 1000001",
        "run --baseline-secs 20",
        "run --metrics order",
        "run --metrics order=127.0.0.1:9101",
        // Which databases to count is --watch-postgres's prefix.
        "run --stats-database-url postgres://postgres@127.0.0.1/postgres",
        "capacity --rate 5",
        "capacity --duration-secs 5",
        "sequential --quiet",
        "baseline",
        "fly",
    ] {
        assert!(parse(line, TokensFromEnv::default()).is_err(), "{line}");
    }
    assert!(matches!(
        parse("", TokensFromEnv::default()),
        Ok(Command::Help)
    ));
    for line in ["run --help", "help", "help capacity", "capacity -h"] {
        let error = cli(line).expect_err(line);
        assert_eq!(error.kind(), ErrorKind::DisplayHelp, "{line}");
    }
}

#[test]
fn baseline_and_sequential_parse() {
    let Command::Baseline(options, out) = parse(
        "baseline --database-url postgres://p@h/db --duration-secs 5 --clients 4",
        TokensFromEnv::default(),
    )
    .expect("parsed") else {
        panic!("not baseline");
    };
    assert_eq!(options.clients, 4);
    assert_eq!(options.duration, Duration::from_secs(5));
    assert_eq!(out, None);
    let Command::Sequential(options) = parse(
        "sequential --orders 3 --poll-ms 2",
        TokensFromEnv::default(),
    )
    .expect("parsed") else {
        panic!("not sequential");
    };
    assert_eq!(options.orders, 3);
    assert_eq!(options.poll_interval, Duration::from_millis(2));
}
