use shipshape_messaging::service;
use shipshape_runtime::{metrics, shutdown};
use shipshape_shipping::{Config, MIGRATOR, TOPICS, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = shipshape_telemetry::init("shipping")?;
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
