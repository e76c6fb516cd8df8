//! `shipshape-check`: checks the saga's invariants of a quiet system and
//! prints the report; exits 1 when any invariant is violated, 2 when the
//! check itself could not run.

use std::process::ExitCode;

use anyhow::{Context, bail};
use shipshape_invariants::{Checker, SourceMessage, Sources};

const USAGE: &str = "usage: shipshape-check --order-db URL --inventory-db URL --payment-db URL \
--shipping-db URL [--psp URL] [--brokers HOST:PORT] [--topic-prefix PREFIX] [--explain TOPIC:PARTITION:OFFSET]... [--json]";

struct Args {
    sources: Sources,
    explained: Vec<SourceMessage>,
    json: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let (mut order, mut inventory, mut payment, mut shipping) = (None, None, None, None);
    let (mut psp_url, mut brokers, mut explained, mut json) = (None, None, Vec::new(), false);
    let mut topic_prefix = String::new();
    while let Some(flag) = args.next() {
        if flag == "--json" {
            json = true;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--order-db" => order = Some(value),
            "--inventory-db" => inventory = Some(value),
            "--payment-db" => payment = Some(value),
            "--shipping-db" => shipping = Some(value),
            "--psp" => psp_url = Some(value),
            "--brokers" => brokers = Some(value),
            "--topic-prefix" => topic_prefix = value,
            "--explain" => explained.push(source_message(&value)?),
            other => bail!("unknown argument {other}"),
        }
    }
    let required =
        |value: Option<String>, flag: &str| value.with_context(|| format!("{flag} is required"));
    Ok(Args {
        sources: Sources {
            order_db: required(order, "--order-db")?,
            inventory_db: required(inventory, "--inventory-db")?,
            payment_db: required(payment, "--payment-db")?,
            shipping_db: required(shipping, "--shipping-db")?,
            psp_url,
            brokers,
            topic_prefix,
        },
        explained,
        json,
    })
}

/// `order.events:0:42`: a topic name has no colon, so split from the right.
fn source_message(text: &str) -> anyhow::Result<SourceMessage> {
    let mut parts = text.rsplitn(3, ':');
    let (Some(offset), Some(partition), Some(topic)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("--explain takes TOPIC:PARTITION:OFFSET, not {text}");
    };
    Ok(SourceMessage {
        topic: topic.to_owned(),
        partition: partition.parse().context("the partition")?,
        offset: offset.parse().context("the offset")?,
    })
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let checker = Checker::connect(args.sources).await?;
    for source in args.explained {
        checker.explain(source);
    }
    let report = checker.check().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.is_clean())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("shipshape-check: {e:#}");
            ExitCode::from(2)
        }
    }
}
