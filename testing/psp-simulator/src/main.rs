use shipshape_psp_simulator::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = shipshape_telemetry::init("psp-simulator")?;
    let shutdown = shipshape_runtime::shutdown::on_signal()?;
    telemetry
        .around(async { run(Config::from_env()?, shutdown).await })
        .await
}
