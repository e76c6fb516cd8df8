//! `cargo xtask sqlx-prepare`: writes the data that lets `sqlx::query!`
//! check every query at compile time with no database (each crate's
//! `.sqlx/` folder, committed), or with `--check` fails when that data is
//! missing or out of date.
//!
//! What `cargo sqlx prepare` does, without installing sqlx-cli: for each
//! crate with queries, a scratch database gets the migrations the crate's
//! queries run against, then `cargo check` compiles the crate online against
//! it, with `SQLX_OFFLINE_DIR` telling sqlx's macros where to write what
//! they learned. Every other build reads `.sqlx/` (`SQLX_OFFLINE=true` in
//! `.cargo/config.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use shipshape_testkit::postgres;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

use crate::workspace::{Workspace, cargo};

/// Which data to write, or only to compare.
#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// Compare instead of writing: fail, naming the crates, when a `.sqlx/`
    /// folder differs from what the queries need
    #[arg(long)]
    check: bool,
}

/// A crate whose queries are checked at compile time.
struct QueryCrate {
    package: &'static str,
    /// The crate's folder, from the workspace root.
    dir: &'static str,
    /// The migration folders its queries run against, in order.
    migrations: &'static [&'static str],
}

const MESSAGING_DIR: &str = "shared/messaging";
const MESSAGING_MIGRATIONS: &str = "shared/messaging/migrations";

/// The messaging crate's queries touch only its own tables (outbox, inbox),
/// which every service's database has; each service's touch its own too.
const QUERY_CRATES: [QueryCrate; 5] = [
    QueryCrate {
        package: "shipshape-messaging",
        dir: MESSAGING_DIR,
        migrations: &[MESSAGING_MIGRATIONS],
    },
    QueryCrate {
        package: "shipshape-order",
        dir: "services/order",
        migrations: &[MESSAGING_MIGRATIONS, "services/order/migrations"],
    },
    QueryCrate {
        package: "shipshape-inventory",
        dir: "services/inventory",
        migrations: &[MESSAGING_MIGRATIONS, "services/inventory/migrations"],
    },
    QueryCrate {
        package: "shipshape-payment",
        dir: "services/payment",
        migrations: &[MESSAGING_MIGRATIONS, "services/payment/migrations"],
    },
    QueryCrate {
        package: "shipshape-shipping",
        dir: "services/shipping",
        migrations: &[MESSAGING_MIGRATIONS, "services/shipping/migrations"],
    },
];

/// The data sqlx's macros keep per query: `query-<hash of the SQL>.json`.
type QueryData = BTreeMap<String, Vec<u8>>;

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let workspace = Workspace::load().await?;
    let admin_url = postgres::ensure_server().await?;
    let mut stale = Vec::new();
    // A crate's check also compiles the messaging crate when its features
    // differ there, and the macros then record messaging's queries too:
    // those belong in messaging's folder alone (QUERY_CRATES starts there).
    let mut messaging = QueryData::new();
    for query_crate in &QUERY_CRATES {
        let mut learned = learn(&workspace, &admin_url, query_crate).await?;
        if query_crate.dir == MESSAGING_DIR {
            messaging = learned.clone();
        } else {
            learned.retain(|name, _| !messaging.contains_key(name));
        }
        let committed_dir = workspace.root.join(query_crate.dir).join(".sqlx");
        let committed = read_query_data(&committed_dir)?;
        if learned == committed {
            eprintln!("{}: {} queries, up to date", query_crate.dir, learned.len());
        } else if args.check {
            stale.push(query_crate.dir);
        } else {
            write_query_data(&committed_dir, &learned)?;
            eprintln!("{}: {} queries written", query_crate.dir, learned.len());
        }
    }
    if !stale.is_empty() {
        bail!(
            "the compile-time query data of {} is out of date with the queries or the \
             migrations: run `cargo xtask sqlx-prepare` and commit the .sqlx folders",
            stale.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Compiles the crate against a scratch database with its migrations and
/// returns the query data its macros wrote.
async fn learn(
    workspace: &Workspace,
    admin_url: &str,
    query_crate: &QueryCrate,
) -> anyhow::Result<QueryData> {
    let database = format!("shipshape_sqlx_{}", query_crate.package.replace('-', "_"));
    postgres::drop_database(admin_url, &database).await?;
    let url = postgres::create_service_database(admin_url, &database, &database).await?;
    let learned = async {
        migrate(workspace, &url, query_crate.migrations).await?;
        let out_dir = workspace
            .target_dir
            .join("sqlx-prepare")
            .join(query_crate.package);
        if out_dir.exists() {
            std::fs::remove_dir_all(&out_dir)
                .with_context(|| format!("emptying {}", out_dir.display()))?;
        }
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        // The macros run only when the crate is compiled, and nothing tells
        // Cargo that the database changed: a newer source file does.
        touch_sources(&workspace.root.join(query_crate.dir).join("src"))?;
        let status = cargo()
            .args([
                "check",
                "--quiet",
                "--lib",
                "--package",
                query_crate.package,
            ])
            .current_dir(&workspace.root)
            .env("DATABASE_URL", &url)
            .env("SQLX_OFFLINE", "false")
            .env("SQLX_OFFLINE_DIR", &out_dir)
            .status()
            .await
            .context("running cargo check")?;
        if !status.success() {
            bail!(
                "cargo check of {} against its migrations failed ({status})",
                query_crate.package
            );
        }
        read_query_data(&out_dir)
    }
    .await;
    postgres::drop_database(admin_url, &database).await?;
    learned
}

async fn migrate(workspace: &Workspace, url: &str, folders: &[&str]) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect(url)
        .await
        .context("connecting to the scratch database")?;
    for folder in folders {
        let mut migrator = Migrator::new(workspace.root.join(folder))
            .await
            .with_context(|| format!("reading the migrations in {folder}"))?;
        // Each folder numbers its own migrations; the others' are not missing.
        migrator.set_ignore_missing(true);
        migrator
            .run(&mut connection)
            .await
            .with_context(|| format!("applying the migrations in {folder}"))?;
    }
    connection.close().await?;
    Ok(())
}

fn touch_sources(dir: &Path) -> anyhow::Result<()> {
    let now = SystemTime::now();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            touch_sources(&path)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(now))
                .with_context(|| format!("touching {}", path.display()))?;
        }
    }
    Ok(())
}

fn query_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("query-") && name.ends_with(".json") {
            files.push(path);
        }
    }
    Ok(files)
}

fn read_query_data(dir: &Path) -> anyhow::Result<QueryData> {
    let mut data = QueryData::new();
    for path in query_files(dir)? {
        let contents =
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        data.insert(name.unwrap_or_default(), contents);
    }
    Ok(data)
}

/// Replaces the folder's query data with `data`: a query that was removed
/// leaves no file behind.
fn write_query_data(dir: &Path, data: &QueryData) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for path in query_files(dir)? {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    for (name, contents) in data {
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, clap::Error> {
        match crate::parse(&format!("sqlx-prepare {line}"))? {
            crate::Command::SqlxPrepare(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writing_is_the_default_and_check_only_compares() {
        assert_eq!(parse("").expect("no flags"), Args { check: false });
        assert_eq!(parse("--check").expect("--check"), Args { check: true });
        assert!(parse("--write").is_err());
    }

    #[test]
    fn every_crate_with_migrations_starts_from_the_messaging_tables() {
        assert_eq!(QUERY_CRATES[0].dir, MESSAGING_DIR, "learned first");
        for query_crate in &QUERY_CRATES {
            assert_eq!(query_crate.migrations[0], MESSAGING_MIGRATIONS);
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(query_crate.dir)
                    .join("Cargo.toml")
                    .exists()
            );
        }
    }
}
