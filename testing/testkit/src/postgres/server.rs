//! Finding a server: the one at the admin URL when it answers, else the
//! private cluster; and the admin connection to it.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use sqlx::{Connection, PgConnection};

use super::{ADMIN_URL_VAR, PrivateCluster, admin_url, redact};

/// How to name a superuser with a password, for servers that ask for one
/// (Debian's does on 127.0.0.1).
const EXAMPLE_ADMIN_URL: &str = "postgres://postgres:PASSWORD@127.0.0.1:5432/postgres";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Postgres server to create databases on, as an admin URL.
///
/// Uses the server at [`admin_url`] when it answers. Otherwise starts (or
/// reuses) a private cluster at [`PrivateCluster::default_location`] if
/// PostgreSQL is installed, and fails with installation advice if not.
pub async fn ensure_server() -> anyhow::Result<String> {
    ensure_server_at(&admin_url(), PrivateCluster::default_location()).await
}

/// [`ensure_server`] with an explicit admin URL and fallback cluster.
pub async fn ensure_server_at(admin_url: &str, fallback: PrivateCluster) -> anyhow::Result<String> {
    let reason = match probe(admin_url).await {
        Probe::Answers => return Ok(admin_url.to_owned()),
        Probe::Unreachable(reason) => reason,
        Probe::Refused(reason) => bail!(
            "PostgreSQL at {} answers but refused the admin connection: {reason}\n\
             Set {ADMIN_URL_VAR} to a superuser URL, e.g. {EXAMPLE_ADMIN_URL}",
            redact(admin_url)
        ),
    };
    // Started by an earlier run: nothing to do. Without its password file
    // it was never created, or was created by an older test kit with trust
    // authentication, which `start` replaces.
    if let Ok(url) = fallback.admin_url()
        && let Probe::Answers = probe(&url).await
    {
        return Ok(url);
    }
    eprintln!(
        "shipshape-testkit: no PostgreSQL at {} ({reason}); \
         starting a private cluster in {} on port {}",
        redact(admin_url),
        fallback.data_dir().display(),
        fallback.port,
    );
    let url = tokio::task::spawn_blocking(move || fallback.start())
        .await
        .context("the private cluster's start task failed")?
        .with_context(|| format!("no PostgreSQL server answers at {}", redact(admin_url)))?;
    match probe(&url).await {
        Probe::Answers => Ok(url),
        Probe::Unreachable(reason) | Probe::Refused(reason) => bail!(
            "the private PostgreSQL cluster started but does not answer at {}: {reason}",
            redact(&url)
        ),
    }
}

enum Probe {
    Answers,
    /// Nothing (usable) listens there: worth starting our own server.
    Unreachable(String),
    /// A server answered and said no (authentication, missing database).
    Refused(String),
}

async fn probe(url: &str) -> Probe {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Err(_) => Probe::Unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")),
        Ok(Ok(connection)) => {
            // Only the answer matters; a failed goodbye does not.
            let _ = connection.close().await;
            Probe::Answers
        }
        Ok(Err(sqlx::Error::Io(e))) => Probe::Unreachable(e.to_string()),
        Ok(Err(e)) => Probe::Refused(e.to_string()),
    }
}

pub(super) async fn admin_connection(admin_url: &str) -> anyhow::Result<PgConnection> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(admin_url))
        .await
        .map_err(|_| anyhow!("no answer within {CONNECT_TIMEOUT:?}"))
        .and_then(|connected| Ok(connected?))
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(admin_url)))
}
