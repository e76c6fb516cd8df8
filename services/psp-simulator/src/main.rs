use shipshape_psp_simulator::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shipshape_runtime::logging::init("psp-simulator");
    let shutdown = shipshape_runtime::shutdown::on_signal()?;
    let config = Config::from_env()?;
    run(config, shutdown).await
}
