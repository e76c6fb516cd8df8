//! `shipshape-kafka-setup`: prepares a secured broker for one deployment.

use anyhow::Context;
use clap::Parser;
use shipshape_kafka::{Connection, Deployment, Password, TopicLayout};
use shipshape_proto::ROLES;
use shipshape_runtime::config;

/// Creates, logged in as a super user, each service's SCRAM-SHA-512 login,
/// the deployment's topics, and the ACLs that let each service write only
/// the topic it publishes on (and the dead letters) and read only the topics
/// it consumes, in its own consumer group. Running it again changes nothing
/// but the passwords (a rotation).
///
/// The admin's connection comes from KAFKA_BROKERS, KAFKA_SECURITY_PROTOCOL,
/// KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD(_FILE), KAFKA_SASL_MECHANISM and
/// KAFKA_SSL_CA_LOCATION, as the services read them. Each service's password
/// comes from KAFKA_PASSWORD_<SERVICE> or KAFKA_PASSWORD_<SERVICE>_FILE
/// (ORDER, INVENTORY, PAYMENT, SHIPPING); the topics from KAFKA_TOPIC_PREFIX,
/// KAFKA_TOPIC_PARTITIONS (default 3) and KAFKA_REPLICATION_FACTOR (default 1).
#[derive(Debug, Parser)]
#[command(name = "shipshape-kafka-setup")]
struct Cli {}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    Cli::parse();
    let admin = Connection::from_env()?;
    let deployment = Deployment {
        prefix: config::string_or("KAFKA_TOPIC_PREFIX", "")?,
        layout: TopicLayout {
            partitions: config::var_or("KAFKA_TOPIC_PARTITIONS", 3)?,
            replication: config::var_or("KAFKA_REPLICATION_FACTOR", 1)?,
        },
    };
    let mut logins = Vec::with_capacity(ROLES.len());
    for role in &ROLES {
        let var = format!("KAFKA_PASSWORD_{}", role.service.to_ascii_uppercase());
        let password = config::value_or_file(&var)?
            .with_context(|| format!("{var} (or {var}_FILE) is required"))?;
        let mut login = deployment.login(role, Password::new(password));
        // The services log in with the mechanism the setup does
        // (KAFKA_SASL_MECHANISM, the same for every login of a deployment).
        if let Some(admin) = &admin.login {
            login.mechanism = admin.mechanism;
        }
        logins.push(login);
    }
    deployment.apply(&admin, &logins).await?;
    for login in &logins {
        println!("{}: login, topics and grants in place", login.username);
    }
    Ok(())
}
