//! Least privilege on the real Postgres: the databases the test kit creates
//! (for every test stack and for `cargo xtask up`) are open to their own
//! service's role only, as in docker-compose and the Helm chart.

use shipshape_testkit::Service;
use shipshape_testkit::postgres;
use shipshape_testkit::stack::test_database_prefix;
use sqlx::{Connection, Executor, PgConnection};

/// SQLSTATE `insufficient_privilege`: what Postgres answers a role that
/// lacks CONNECT on a database.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

fn role(service: Service) -> String {
    service.role().expect("a service with a database")
}

/// Connects to `db_name` as `role`, on the admin URL's server.
async fn connect_as(admin: &str, db_name: &str, role: &str) -> Result<(), sqlx::Error> {
    let url = postgres::service_url(admin, db_name, role).expect("a service URL");
    let connection = PgConnection::connect(&url).await?;
    connection.close().await
}

async fn assert_can_connect(admin: &str, db_name: &str, role: &str) -> anyhow::Result<()> {
    connect_as(admin, db_name, role)
        .await
        .map_err(|e| anyhow::anyhow!("{role} could not connect to its database {db_name}: {e}"))
}

async fn assert_refused(admin: &str, db_name: &str, role: &str) -> anyhow::Result<()> {
    match connect_as(admin, db_name, role).await {
        Ok(()) => anyhow::bail!("{role} connected to {db_name}, which it does not own"),
        // The refusal must be about privileges, not a missing database or
        // role that would make the test pass for the wrong reason.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "{role} connecting to {db_name} failed, but not with SQLSTATE \
             {INSUFFICIENT_PRIVILEGE} (insufficient_privilege): {e}"
        ),
    }
}

/// Runs `checks` and then drops `names`, also when the checks fail.
async fn then_drop(
    admin: &str,
    names: &[String],
    checks: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let checked = checks.await;
    postgres::drop_databases(admin, names).await?;
    checked
}

#[tokio::test]
async fn each_service_role_can_open_only_its_own_database() -> anyhow::Result<()> {
    let admin = postgres::ensure_server().await?;
    let prefix = test_database_prefix();
    let (order, inventory) = (role(Service::Order), role(Service::Inventory));
    let order_db = format!("{prefix}_order");
    let inventory_db = format!("{prefix}_inventory");
    let names = [order_db.clone(), inventory_db.clone()];
    then_drop(&admin, &names, async {
        postgres::create_service_database(&admin, &order_db, &order).await?;
        postgres::create_service_database(&admin, &inventory_db, &inventory).await?;

        assert_can_connect(&admin, &order_db, &order).await?;
        assert_refused(&admin, &inventory_db, &order).await?;
        assert_can_connect(&admin, &inventory_db, &inventory).await?;
        assert_refused(&admin, &order_db, &inventory).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_database_left_open_by_an_earlier_run_is_closed_when_created_again() -> anyhow::Result<()>
{
    let admin = postgres::ensure_server().await?;
    let prefix = test_database_prefix();
    let (order, inventory) = (role(Service::Order), role(Service::Inventory));
    let order_db = format!("{prefix}_order");
    let inventory_db = format!("{prefix}_inventory");
    let names = [order_db.clone(), inventory_db.clone()];
    then_drop(&admin, &names, async {
        postgres::create_service_database(&admin, &order_db, &order).await?;
        postgres::create_service_database(&admin, &inventory_db, &inventory).await?;
        // Open it to every role again, as the test kit used to leave it (a
        // database kept by `cargo xtask up` from an earlier run).
        let mut connection = PgConnection::connect(&admin).await?;
        let opened = connection
            .execute(
                format!(r#"GRANT CONNECT, TEMPORARY ON DATABASE "{order_db}" TO PUBLIC"#).as_str(),
            )
            .await;
        connection.close().await?;
        opened?;
        assert_can_connect(&admin, &order_db, &inventory).await?;

        postgres::create_service_database(&admin, &order_db, &order).await?;
        assert_can_connect(&admin, &order_db, &order).await?;
        assert_refused(&admin, &order_db, &inventory).await?;
        Ok(())
    })
    .await
}
