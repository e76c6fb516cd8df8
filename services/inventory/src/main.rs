use shipshape_inventory::{Config, MIGRATOR, TOPICS, serve};
use shipshape_messaging::service;
use shipshape_runtime::{metrics, shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = shipshape_telemetry::init("inventory")?;
    metrics::install();
    let shutdown = shutdown::on_signal()?;
    telemetry
        .around(async {
            let config = Config::from_env()?;
            let (pool, broker) =
                service::connect(&config.service, &MIGRATOR, &TOPICS, &shutdown).await?;
            serve(config, pool, broker, shutdown).await
        })
        .await
}
