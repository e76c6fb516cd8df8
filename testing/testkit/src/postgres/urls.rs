//! Connection URLs and the names in them: the admin URL, the URL each
//! service connects with, the names accepted for databases and roles, and
//! URLs with their passwords hidden for messages.

use std::str::FromStr;

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;

/// The environment variable naming the admin (superuser) connection URL.
pub const ADMIN_URL_VAR: &str = "SHIPSHAPE_PG_ADMIN_URL";

/// The admin URL used when [`ADMIN_URL_VAR`] is unset: a local server that
/// lets `postgres` in over TCP without a password (trust authentication), or
/// with one from `PGPASSWORD` or `~/.pgpass`, which the client reads when
/// the URL carries none.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL: [`ADMIN_URL_VAR`] if set, else [`DEFAULT_ADMIN_URL`].
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// The URL a service uses for `db_name` as `role`, on the admin URL's server.
pub fn service_url(admin_url: &str, db_name: &str, role: &str) -> anyhow::Result<String> {
    let options = PgConnectOptions::from_str(admin_url)
        .with_context(|| format!("parsing the admin URL {}", redact(admin_url)))?;
    let host = options.get_host();
    let port = options.get_port();
    Ok(if host.starts_with('/') {
        // A Unix socket directory.
        format!("postgres://{role}:{role}@localhost:{port}/{db_name}?host={host}")
    } else if host.contains(':') {
        format!("postgres://{role}:{role}@[{host}]:{port}/{db_name}")
    } else {
        format!("postgres://{role}:{role}@{host}:{port}/{db_name}")
    })
}

/// The `host:port` of the admin URL's server, for a proxy in front of it;
/// fails for a server reached over a Unix socket.
pub fn tcp_address(admin_url: &str) -> anyhow::Result<String> {
    let options = PgConnectOptions::from_str(admin_url)
        .with_context(|| format!("parsing the admin URL {}", redact(admin_url)))?;
    let host = options.get_host();
    if let Some(socket) = options.get_socket() {
        bail!(
            "a database link can be proxied only when Postgres is reached over TCP, not {}",
            socket.display()
        );
    }
    if host.starts_with('/') {
        bail!("a database link can be proxied only when Postgres is reached over TCP, not {host}");
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{}", options.get_port())
    } else {
        format!("{host}:{}", options.get_port())
    })
}

/// `url` (a [`service_url`]) pointed at a proxy on `127.0.0.1:port`.
pub fn via(url: &str, port: u16) -> String {
    let Some((credentials, rest)) = url.split_once('@') else {
        return url.to_owned();
    };
    let database = rest
        .split_once('/')
        .map_or("", |(_, path)| path.split('?').next().unwrap_or(path));
    format!("{credentials}@127.0.0.1:{port}/{database}")
}

/// Database and role names are interpolated into SQL, so only plain
/// lowercase identifiers are accepted.
pub(super) fn check_identifier(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!(
            "{name:?} is not accepted as a database or role name: use 1 to 63 lowercase \
             letters, digits and underscores, not starting with a digit"
        );
    }
    Ok(())
}

/// `url` with its password (if any) replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}
