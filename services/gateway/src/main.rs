//! Starts the gateway; everything else is in the library.
#![forbid(unsafe_code)]

use shipshape_gateway::{Config, run};
use shipshape_runtime::{logging, metrics, shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init("gateway");
    metrics::install();
    shipshape_resilience::describe();
    let shutdown = shutdown::on_signal()?;
    let config = Config::from_env()?;
    run(config, shutdown).await
}
