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

/// SQLSTATE `invalid_password`: what Postgres answers a login whose password
/// is wrong or missing, where it asks for one.
const INVALID_PASSWORD: &str = "28P01";

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

/// Connects over TCP to `url`, which must be refused as [`INVALID_PASSWORD`].
async fn assert_password_refused(url: &str, what: &str) -> anyhow::Result<()> {
    let error = match PgConnection::connect(url).await {
        Ok(connection) => {
            connection.close().await?;
            anyhow::bail!(
                "{what} was let in: the server does not ask for passwords over TCP \
                 (trust authentication?)"
            )
        }
        Err(e) => e,
    };
    let code = error.as_database_error().and_then(|e| e.code());
    if code.as_deref() != Some(INVALID_PASSWORD) {
        anyhow::bail!(
            "{what} failed, but not with SQLSTATE {INVALID_PASSWORD} (invalid_password): {error}"
        );
    }
    Ok(())
}

/// A role's password is what keeps it out of other services' data on a
/// shared server: a server that trusts TCP connections (as the test kit's
/// private cluster once did) would let every test here pass while checking
/// no credentials at all.
#[tokio::test]
async fn a_service_role_needs_its_password_over_tcp() -> anyhow::Result<()> {
    let admin = postgres::ensure_server().await?;
    // The services reach Postgres over TCP; that is the authentication this
    // proves, so an admin URL naming a Unix socket fails the test.
    let address = postgres::tcp_address(&admin)?;
    let prefix = test_database_prefix();
    let order = role(Service::Order);
    let order_db = format!("{prefix}_order");
    then_drop(&admin, std::slice::from_ref(&order_db), async {
        postgres::create_service_database(&admin, &order_db, &order).await?;
        // With its own password it gets in, so the refusals below are about
        // the password, not a missing role or database.
        assert_can_connect(&admin, &order_db, &order).await?;

        let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
        assert_password_refused(
            &format!("postgres://{order}:{wrong}@{address}/{order_db}"),
            &format!("{order} with a wrong password"),
        )
        .await?;
        // No password in the URL. (The client would take one from
        // PGPASSWORD or ~/.pgpass, which never hold a service role's.)
        assert_password_refused(
            &format!("postgres://{order}@{address}/{order_db}"),
            &format!("{order} without a password"),
        )
        .await?;
        Ok(())
    })
    .await
}
