use std::time::Duration;

use shipshape_loadtest::sequential;

const USAGE: &str =
    "usage: shipshape-loadtest sequential [--gateway URL] [--orders N] [--poll-ms MS]

  sequential   place N orders one after another (default 200) against the gateway
               (default http://127.0.0.1:8080) and report POST -> terminal latency";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("sequential") {
        println!("{USAGE}");
        std::process::exit(if args.is_empty() || args[0] == "--help" {
            0
        } else {
            2
        });
    }
    let mut options = sequential::Options {
        gateway: "http://127.0.0.1:8080".to_owned(),
        orders: 200,
        poll_interval: Duration::from_millis(1),
        order_timeout: Duration::from_secs(60),
    };
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--gateway" => options.gateway = value.trim_end_matches('/').to_owned(),
            "--orders" => options.orders = value.parse()?,
            "--poll-ms" => options.poll_interval = Duration::from_millis(value.parse()?),
            _ => anyhow::bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    let mut report = sequential::run(&options).await?;
    print!("{}", report.render());
    Ok(())
}
