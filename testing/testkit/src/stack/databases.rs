//! A stack's databases: one per service, created with its role, and
//! dropped again, also from code that cannot await.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};

use super::Service;
use crate::postgres;

/// Drops `names` from synchronous code (`Drop` cannot await): on a thread of
/// its own with its own runtime, so it works inside and outside a runtime.
pub(crate) fn drop_databases_blocking(admin_url: &str, names: Vec<String>) {
    let admin_url = admin_url.to_owned();
    let dropping = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a runtime to drop the test databases")?;
        runtime.block_on(postgres::drop_databases(&admin_url, &names))
    });
    match dropping.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("shipshape-testkit: could not drop the test databases: {e:#}"),
        Err(_) => eprintln!("shipshape-testkit: dropping the test databases panicked"),
    }
}

/// Creates `<prefix>_order`, ... and their roles, concurrently. Returns the
/// database names and each service's URL. On failure, drops them again
/// unless `keep`.
pub(super) async fn create_databases(
    admin_url: &str,
    prefix: &str,
    keep: bool,
) -> anyhow::Result<(Vec<String>, BTreeMap<Service, String>)> {
    let mut names = Vec::new();
    let mut creations = tokio::task::JoinSet::new();
    for service in Service::WITH_DATABASE {
        let Some(role) = service.role() else { continue };
        let name = format!("{prefix}_{}", service.name());
        names.push(name.clone());
        let admin_url = admin_url.to_owned();
        creations.spawn(async move {
            let created = postgres::create_service_database(&admin_url, &name, &role).await;
            (service, created)
        });
    }
    let mut urls = BTreeMap::new();
    let mut failure = None;
    while let Some(joined) = creations.join_next().await {
        match joined {
            Ok((service, Ok(url))) => {
                urls.insert(service, url);
            }
            Ok((_, Err(e))) => failure = Some(e),
            Err(e) => failure = Some(anyhow!("a database creation task failed: {e}")),
        }
    }
    if let Some(error) = failure {
        if !keep {
            // Best effort: the creation error is the one to report.
            let _ = postgres::drop_databases(admin_url, &names).await;
        }
        return Err(error);
    }
    Ok((names, urls))
}
