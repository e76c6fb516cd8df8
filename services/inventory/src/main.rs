use shipshape_inventory::{Config, MIGRATOR, TOPICS, serve};
use shipshape_messaging::Broker;
use shipshape_runtime::{database, logging, shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init("inventory");
    let shutdown = shutdown::on_signal()?;
    let config = Config::from_env()?;
    let db = &config.database;
    let pool = database::connect(&db.url, db.max_connections, &shutdown).await?;
    database::migrate(&pool, &[&shipshape_messaging::MIGRATOR, &MIGRATOR]).await?;
    let broker = Broker::connect(config.kafka.clone(), &TOPICS).await?;
    serve(config, pool, broker, shutdown).await
}
