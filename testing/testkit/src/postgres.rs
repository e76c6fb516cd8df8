//! Postgres for tests and local runs: find a server (or start a private one)
//! and create and drop the per-service databases.
//!
//! Each service owns one database and logs in with its own role, as in
//! docker-compose and Helm. Roles (`shipshape_order`, ...) are shared by all
//! runs; databases are per run, so parallel tests never see each other's rows.

mod cluster;
mod databases;
mod server;
mod urls;

pub use cluster::{PRIVATE_PORT, PrivateCluster};
pub use databases::{
    create_service_database, drop_database, drop_databases, drop_stale_test_databases,
    terminate_connections,
};
pub use server::{ensure_server, ensure_server_at};
pub use urls::{
    ADMIN_URL_VAR, DEFAULT_ADMIN_URL, admin_url, redact, service_url, tcp_address, via,
};

#[cfg(test)]
mod tests;
