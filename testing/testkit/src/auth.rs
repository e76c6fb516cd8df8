//! Bearer tokens for stacks the test kit starts: the gateway checks HS256
//! tokens from the development issuer with a secret the kit chooses, and
//! the kit mints tokens with the same secret.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use shipshape_auth::Minter;

/// The issuer and audience of development tokens.
pub const DEV_ISSUER: &str = "shipshape-dev";
pub const DEV_AUDIENCE: &str = "shipshape";

/// How long a minted token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A fresh secret: 32 random bytes as hex.
pub fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where the development secret lives: outside the repository, readable
/// by its owner only.
pub fn dev_secret_path() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/shipshape/dev-jwt-secret"))
}

/// The development secret of local runs (`cargo xtask up`, `cargo xtask
/// token`): made once per machine, at random, so no secret is in the
/// repository and tokens minted yesterday still work today.
pub fn dev_secret() -> anyhow::Result<String> {
    let path = dev_secret_path()?;
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    let secret = random_secret()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, secret.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// A minter of development tokens signed with `secret`.
pub fn minter(secret: &str) -> anyhow::Result<Minter> {
    Minter::hs256(secret.as_bytes(), DEV_ISSUER, DEV_AUDIENCE)
}
