//! Tests of `postgres`.

use sqlx::{Connection, Executor, PgConnection};

use super::server::admin_connection;
use super::urls::check_identifier;
use super::*;

pub(super) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn database_exists(admin: &str, name: &str) -> bool {
    let mut connection = admin_connection(admin).await.expect("admin connection");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut connection)
        .await
        .expect("query pg_database")
}

async fn drop_role(admin: &str, role: &str) {
    let mut connection = admin_connection(admin).await.expect("admin connection");
    connection
        .execute(format!(r#"DROP ROLE IF EXISTS "{role}""#).as_str())
        .await
        .expect("drop role");
}

#[tokio::test]
async fn a_server_that_refuses_is_reported_with_the_variable_to_set() {
    let admin = ensure_server().await.expect("a Postgres server");
    // A database that does not exist: refused whatever the server's
    // authentication, as a wrong password is where one is asked for.
    let (server, _) = admin.rsplit_once('/').expect("a database in the admin URL");
    let refused = format!("{server}/{}", unique("shipshape_missing_"));
    let fallback = PrivateCluster::new(
        std::env::temp_dir().join(unique("shipshape-unused-")),
        PRIVATE_PORT + 1,
    );

    let error = ensure_server_at(&refused, fallback.clone())
        .await
        .expect_err("a refusing server is an error");

    let message = format!("{error:#}");
    assert!(
        message.contains("refused the admin connection"),
        "{message}"
    );
    assert!(message.contains(ADMIN_URL_VAR), "{message}");
    assert!(
        !fallback.data_dir().exists(),
        "a server that refuses is not replaced by a private cluster"
    );
}

#[tokio::test]
async fn creates_a_database_the_role_owns_and_drops_it() {
    let admin = ensure_server().await.expect("a Postgres server");
    let name = unique("shipshape_tkit_");
    let role = "shipshape_testkit";
    let url = create_service_database(&admin, &name, role)
        .await
        .expect("create");
    assert!(url.starts_with(&format!("postgres://{role}:{role}@")));
    assert!(url.ends_with(&format!("/{name}")));

    // The service role can log in and create tables: it owns the database.
    let mut service = PgConnection::connect(&url).await.expect("connect as role");
    service
        .execute("CREATE TABLE probe (id INT PRIMARY KEY); INSERT INTO probe VALUES (1)")
        .await
        .expect("the role can create tables");

    // Creating it again is not an error.
    let again = create_service_database(&admin, &name, role)
        .await
        .expect("create again");
    assert_eq!(again, url);

    // Dropping works while the role is still connected.
    drop_database(&admin, &name).await.expect("drop");
    assert!(!database_exists(&admin, &name).await);
    drop_database(&admin, &name)
        .await
        .expect("dropping a missing database is fine");
}

#[tokio::test]
async fn concurrent_creation_of_the_same_role_and_database_succeeds() {
    let admin = ensure_server().await.expect("a Postgres server");
    let role = unique("shipshape_tkrole_");
    let names: Vec<String> = (0..3).map(|_| unique("shipshape_tkit_")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..6 {
        let (admin, role, name) = (admin.clone(), role.clone(), names[round % 3].clone());
        tasks.spawn(async move { create_service_database(&admin, &name, &role).await });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.expect("task"));
    }
    for name in &names {
        drop_database(&admin, name).await.expect("drop");
    }
    drop_role(&admin, &role).await;
    for result in results {
        result.expect("every concurrent creation succeeds");
    }
}

#[tokio::test]
async fn drops_only_databases_with_the_stale_prefix() {
    let admin = ensure_server().await.expect("a Postgres server");
    let prefix = format!("{}_", unique("shipshape_tkstale"));
    let stale = [format!("{prefix}a"), format!("{prefix}b")];
    let other = unique("shipshape_tkother_");
    for name in stale.iter().chain([&other]) {
        create_service_database(&admin, name, "shipshape_testkit")
            .await
            .expect("create");
    }
    let dropped = drop_stale_test_databases(&admin, &prefix)
        .await
        .expect("drop stale");
    assert_eq!(dropped, stale.to_vec());
    for name in &stale {
        assert!(!database_exists(&admin, name).await);
    }
    assert!(database_exists(&admin, &other).await);
    drop_database(&admin, &other).await.expect("drop");
}

#[test]
fn names_that_would_need_quoting_are_rejected() {
    for bad in ["", "Order", "1db", "a-b", "x\"; DROP", &"a".repeat(64)] {
        assert!(check_identifier(bad).is_err(), "{bad:?} must be rejected");
    }
    for good in ["shipshape_order", "_x", "shipshape_t0123abcd_order"] {
        check_identifier(good).expect(good);
    }
}

#[test]
fn a_proxied_url_keeps_role_and_database_and_swaps_the_server() {
    let url = service_url(
        "postgres://postgres@127.0.0.1:5432/postgres",
        "shop_order",
        "shop_order",
    )
    .unwrap();
    assert_eq!(
        via(&url, 40001),
        "postgres://shop_order:shop_order@127.0.0.1:40001/shop_order"
    );
    assert_eq!(
        tcp_address("postgres://postgres@127.0.0.1:5432/postgres").unwrap(),
        "127.0.0.1:5432"
    );
    assert!(tcp_address("postgres://postgres@localhost/postgres?host=/run/postgresql").is_err());
}

#[test]
fn service_urls_point_at_the_admin_server() {
    let url = service_url(
        "postgres://postgres:secret@db.local:6543/postgres",
        "shop",
        "clerk",
    )
    .expect("url");
    assert_eq!(url, "postgres://clerk:clerk@db.local:6543/shop");
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact("postgres://u:secret@h:1/d"),
        "postgres://u:***@h:1/d"
    );
    assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
    assert_eq!(redact("not a url"), "not a url");
}
