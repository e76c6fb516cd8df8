//! The broker for local runs and tests: Apache Kafka itself, in KRaft mode,
//! one node that is both broker and controller, on 127.0.0.1.
//!
//! Its jars come from Maven Central: `deploy/kafka/pom.xml` names
//! `org.apache.kafka:kafka_2.13` at [`KAFKA_VERSION`], the version
//! docker-compose and the Helm chart run, and [`Installation::install`] has
//! Maven copy it and everything it needs at run time into
//! `~/.cache/shipshape/kafka-<version>/libs`, once per machine. A broker is
//! then `java -cp libs/* kafka.Kafka server.properties`, after the storage
//! is formatted (`kafka.tools.StorageTool format`), exactly what the
//! distribution's shell scripts do.
//!
//! Every broker is secured as a production one would be: clients log in
//! with SCRAM-SHA-512 and an authorizer refuses whatever no ACL allows.
//! The broker's super user (`admin`, with a password made at its first
//! start and kept with its data) sets up each stack's principals, topics
//! and ACLs (`shipshape_kafka::Deployment`).
//!
//! Each broker keeps its data in a directory of its own, so a broker killed
//! with SIGKILL comes back on the same data with every acknowledged message
//! (producers use `acks=all`). The first broker to stop cleanly on a
//! machine also leaves a record of the classes its JVM loaded (a
//! class-data-sharing archive), which makes every later start about a third
//! faster.

mod config;
mod install;
mod running;
mod shared;

pub use config::{ADMIN_USER, BrokerConfig, BrokerTls};
pub use install::{Installation, KAFKA_LIBS_VAR, KAFKA_VERSION, kafka_dir};
pub use running::{ADMIN_PASSWORD_FILE, Broker, KAFKA_HEAP_VAR};
pub use shared::{
    SHARED_BROKER_PASSWORD_VAR, SHARED_BROKER_VAR, TestBroker, shared_broker, test_topic_prefix,
};

#[cfg(test)]
mod tests;
