//! Starts the gateway; everything else is in the library.
#![forbid(unsafe_code)]

use shipshape_gateway::{Config, run};
use shipshape_runtime::{metrics, shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = shipshape_telemetry::init("gateway")?;
    metrics::install();
    shipshape_resilience::describe();
    let shutdown = shutdown::on_signal()?;
    telemetry
        .around(async { run(Config::from_env()?, shutdown).await })
        .await
}
