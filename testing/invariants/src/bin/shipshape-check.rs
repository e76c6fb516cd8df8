//! `shipshape-check`: checks the saga's invariants of a quiet system and
//! prints the report; exits 1 when any invariant is violated, 2 when the
//! check itself could not run.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shipshape_invariants::{Checker, SourceMessage, Sources};
use shipshape_kafka::Connection;

/// Checks the checkout saga's invariants across every service's database,
/// the PSP ledger and the broker, once the system is quiet, and prints the
/// report.
#[derive(Debug, Parser)]
// A repeated option takes its last value, as the command line always has.
#[command(name = "shipshape-check", args_override_self = true)]
struct Cli {
    /// The order service's database
    #[arg(long, value_name = "URL")]
    order_db: String,
    /// The inventory service's database
    #[arg(long, value_name = "URL")]
    inventory_db: String,
    /// The payment service's database
    #[arg(long, value_name = "URL")]
    payment_db: String,
    /// The shipping service's database
    #[arg(long, value_name = "URL")]
    shipping_db: String,
    /// The PSP simulator's base URL [default: none; the payment table stands
    /// in for the ledger, and a double charge cannot be seen]
    #[arg(long, value_name = "URL")]
    psp: Option<String>,
    /// The broker [default: none; consumer lag and dead letters are not
    /// checked]. The login comes from the environment, read as the services
    /// read theirs: KAFKA_SECURITY_PROTOCOL (PLAINTEXT, the default,
    /// SASL_PLAINTEXT or SASL_SSL), KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD
    /// (or KAFKA_SASL_PASSWORD_FILE), KAFKA_SASL_MECHANISM and
    /// KAFKA_SSL_CA_LOCATION; this flag stands for KAFKA_BROKERS
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// What the services put before every topic and group name
    /// (KAFKA_TOPIC_PREFIX); empty unless they share a broker
    #[arg(long, value_name = "PREFIX", default_value = "")]
    topic_prefix: String,
    /// Marks the dead letters of this source message as expected
    /// (repeatable)
    #[arg(long, value_name = "TOPIC:PARTITION:OFFSET", value_parser = source_message)]
    explain: Vec<SourceMessage>,
    /// The report as JSON instead of text
    #[arg(long)]
    json: bool,
}

/// `order.events:0:42`: a topic name has no colon, so split from the right.
fn source_message(text: &str) -> Result<SourceMessage, String> {
    let mut parts = text.rsplitn(3, ':');
    let (Some(offset), Some(partition), Some(topic)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("expected TOPIC:PARTITION:OFFSET".to_owned());
    };
    Ok(SourceMessage {
        topic: topic.to_owned(),
        partition: partition
            .parse()
            .map_err(|e| format!("the partition `{partition}`: {e}"))?,
        offset: offset
            .parse()
            .map_err(|e| format!("the offset `{offset}`: {e}"))?,
    })
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    // Only with a broker to check: a login nobody uses must not fail the run.
    let broker = match cli.brokers {
        Some(brokers) => {
            let login = Connection::from_env()
                .context("the broker login (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*)")?;
            Some(Connection { brokers, ..login })
        }
        None => None,
    };
    let checker = Checker::connect(Sources {
        order_db: cli.order_db,
        inventory_db: cli.inventory_db,
        payment_db: cli.payment_db,
        shipping_db: cli.shipping_db,
        psp_url: cli.psp,
        broker,
        topic_prefix: cli.topic_prefix,
    })
    .await?;
    for source in cli.explain {
        checker.explain(source);
    }
    let report = checker.check().await?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.is_clean())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("shipshape-check: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    const DATABASES: &str = "--order-db o --inventory-db i --payment-db p --shipping-db s";

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shipshape-check").chain(line.split_whitespace()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_four_databases_are_required_and_the_rest_optional() {
        let cli = parse(DATABASES).expect("parsed");
        assert_eq!(
            [
                &cli.order_db,
                &cli.inventory_db,
                &cli.payment_db,
                &cli.shipping_db
            ],
            ["o", "i", "p", "s"]
        );
        assert_eq!((cli.psp, cli.brokers), (None, None));
        assert_eq!(cli.topic_prefix, "");
        assert!(cli.explain.is_empty());
        assert!(!cli.json);
        assert!(parse("--order-db o --inventory-db i --payment-db p").is_err());
        assert!(parse(&format!("{DATABASES} --verbose")).is_err());
        assert!(parse(&format!("{DATABASES} --psp")).is_err());
    }

    #[test]
    fn explanations_repeat_and_topics_split_from_the_right() {
        let cli = parse(&format!(
            "{DATABASES} --psp http://psp --brokers 127.0.0.1:9092 --topic-prefix t1_ \
             --explain t1_order.events:0:42 --explain payment.events:2:7 --json"
        ))
        .expect("parsed");
        assert_eq!(cli.psp.as_deref(), Some("http://psp"));
        assert_eq!(cli.brokers.as_deref(), Some("127.0.0.1:9092"));
        assert_eq!(cli.topic_prefix, "t1_");
        assert_eq!(
            cli.explain,
            [
                SourceMessage {
                    topic: "t1_order.events".to_owned(),
                    partition: 0,
                    offset: 42,
                },
                SourceMessage {
                    topic: "payment.events".to_owned(),
                    partition: 2,
                    offset: 7,
                },
            ]
        );
        assert!(cli.json);
        for bad in ["order.events:0", "order.events:x:1", "order.events:0:y"] {
            assert!(source_message(bad).is_err(), "{bad}");
        }
    }
}
