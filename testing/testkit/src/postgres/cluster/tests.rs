//! Tests of `cluster`.

use sqlx::{Connection, PgConnection};

use super::*;
use crate::postgres::tests::unique;
use crate::postgres::{create_service_database, ensure_server_at, redact};

/// Stops and removes a private cluster even when the test fails.
struct ClusterGuard(PrivateCluster);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.stop() {
            eprintln!("could not stop the test cluster: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.0.base_dir);
    }
}

#[tokio::test]
async fn falls_back_to_a_private_cluster_when_no_server_answers() {
    // Every machine that runs the suite has PostgreSQL (`.ci/run`
    // installs it); without it this test fails, so the fallback is never
    // reported green untested.
    assert!(
        find_server_bin_dir().is_some(),
        "PostgreSQL's server programs (initdb and pg_ctl) are on neither PATH nor \
         /usr/lib/postgresql/*/bin: install PostgreSQL (e.g. `apt-get install postgresql`) \
         to test the private-cluster fallback"
    );
    let dead = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        crate::free_port()
    );
    let base = std::env::temp_dir().join(unique("shipshape-pg-test-"));
    let guard = ClusterGuard(PrivateCluster::new(&base, crate::free_port()));

    let url = ensure_server_at(&dead, guard.0.clone())
        .await
        .expect("a private cluster");
    assert_eq!(url, guard.0.admin_url().expect("its admin URL"));
    assert_ne!(redact(&url), url, "the admin URL carries a password");

    // It asks for that password: the superuser without it is refused.
    let passwordless = format!("postgres://postgres@127.0.0.1:{}/postgres", guard.0.port);
    let error = PgConnection::connect(&passwordless)
        .await
        .expect_err("the private cluster let postgres in without a password");
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("28P01"),
        "refused as invalid_password: {error}"
    );
    let db = create_service_database(&url, "shipshape_tkprivate", "shipshape_testkit")
        .await
        .expect("create on the private cluster");
    PgConnection::connect(&db)
        .await
        .expect("connect as the role")
        .close()
        .await
        .expect("close");

    // A second start finds it running.
    let again = tokio::task::spawn_blocking({
        let cluster = guard.0.clone();
        move || cluster.start()
    })
    .await
    .expect("task")
    .expect("start again");
    assert_eq!(again, url);
    drop(guard);
    assert!(!base.exists());
}
