//! Who is calling.
//!
//! Customers call the gateway with a bearer JWT. The gateway verifies it
//! ([`Verifier`]: signature, expiry, issuer and audience, with a small
//! clock-skew allowance, and a cap on the lifetime a token may claim) and
//! forwards the caller's [`Identity`] to the services in gRPC metadata
//! ([`Identity::write_metadata`]). The services believe that metadata
//! ([`Identity::from_metadata`]) and nothing else: only the gateway can
//! reach them (the chart's NetworkPolicies), so the gateway is the trust
//! boundary.
//!
//! [`Minter`] signs tokens for development and tests (`cargo xtask token`);
//! production tokens come from an identity provider whose public key the
//! gateway is given.
#![forbid(unsafe_code)]

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, TokenData, Validation};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use tonic::metadata::{MetadataMap, MetadataValue};

/// The scope that may use the operators' API (restocking).
pub const ADMIN_SCOPE: &str = "admin";

/// The metadata the gateway forwards: the caller's subject and scopes.
pub const SUBJECT_METADATA: &str = "x-shipshape-subject";
pub const SCOPES_METADATA: &str = "x-shipshape-scopes";

/// The longest subject accepted. Identity providers' subjects are short
/// (UUIDs, opaque ids, e-mail addresses); the bound keeps ids stored per
/// order, and every index over them, small.
pub const MAX_SUBJECT_LEN: usize = 128;

/// The longest lifetime a token may claim unless `JWT_MAX_LIFETIME_SECS`
/// says otherwise: a day. Identity providers issue access tokens for
/// minutes or hours; a token that claims to be good for years (or, with
/// `exp` near 2^64, forever) is a stolen credential that never dies.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(86_400);

/// The signature algorithms the gateway verifies: HS256 with a shared
/// secret for development; RS256 or ES256 (P-256) with an identity
/// provider's public key in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Hs256,
    Rs256,
    Es256,
}

impl Algorithm {
    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> anyhow::Result<Self> {
        match name {
            "HS256" => Ok(Self::Hs256),
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            _ => bail!("unsupported JWT algorithm `{name}`: use HS256, RS256 or ES256"),
        }
    }
}

/// The key a token is checked with.
#[derive(Clone)]
pub enum VerificationKey {
    /// HS256: the shared secret, at least 32 bytes.
    Secret(Vec<u8>),
    /// RS256 or ES256: the public key, PEM.
    PublicKeyPem(Vec<u8>),
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::PublicKeyPem(_) => f.write_str("PublicKeyPem"),
        }
    }
}

/// The shortest HS256 secret accepted: 256 bits, the hash's size (RFC 7518,
/// section 3.2).
const MIN_SECRET_LEN: usize = 32;

/// What the gateway accepts.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    pub algorithm: Algorithm,
    pub key: VerificationKey,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (among others, if it is a list).
    pub audience: String,
    /// How far the clocks of the issuer and the gateway may disagree.
    pub leeway: Duration,
    /// The longest a token may be good for: its `exp` may be at most this
    /// (plus the leeway) after now, and at most this after its `iat`.
    pub max_lifetime: Duration,
}

impl VerifierConfig {
    /// From the environment: `JWT_ISSUER`, `JWT_AUDIENCE`, `JWT_ALGORITHM`
    /// (`HS256`, the default, `RS256` or `ES256`), the key as
    /// `JWT_HS256_SECRET` (HS256) or `JWT_PUBLIC_KEY` (PEM), each also as a
    /// file (`JWT_HS256_SECRET_FILE`, `JWT_PUBLIC_KEY_FILE`, as secrets are
    /// mounted), `JWT_LEEWAY_SECS` (default 30) and `JWT_MAX_LIFETIME_SECS`
    /// (default 86400, a day; more than 0). Without a key the gateway cannot
    /// check anyone, so it refuses to start.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let algorithm: Algorithm = var("JWT_ALGORITHM")
            .unwrap_or_else(|| "HS256".to_owned())
            .parse()?;
        let from_value_or_file = |name: &str| -> anyhow::Result<Option<Vec<u8>>> {
            let file_var = format!("{name}_FILE");
            match (var(name), var(&file_var)) {
                (Some(_), Some(_)) => bail!("set {name} or {file_var}, not both"),
                (Some(value), None) => Ok(Some(value.into_bytes())),
                (None, Some(path)) => std::fs::read(&path)
                    .map(|bytes| Some(bytes.trim_ascii().to_vec()))
                    .with_context(|| format!("reading {file_var}={path}")),
                (None, None) => Ok(None),
            }
        };
        let key = match algorithm {
            Algorithm::Hs256 => {
                VerificationKey::Secret(from_value_or_file("JWT_HS256_SECRET")?.context(
                    "JWT_HS256_SECRET (or JWT_HS256_SECRET_FILE) is required with HS256",
                )?)
            }
            Algorithm::Rs256 | Algorithm::Es256 => VerificationKey::PublicKeyPem(
                from_value_or_file("JWT_PUBLIC_KEY")?.with_context(|| {
                    format!(
                        "JWT_PUBLIC_KEY (or JWT_PUBLIC_KEY_FILE) is required with {algorithm:?}"
                    )
                })?,
            ),
        };
        let leeway_secs: u64 = match var("JWT_LEEWAY_SECS") {
            Some(secs) => secs
                .parse()
                .with_context(|| format!("JWT_LEEWAY_SECS={secs} is not a number of seconds"))?,
            None => 30,
        };
        let max_lifetime_secs: u64 = match var("JWT_MAX_LIFETIME_SECS") {
            Some(secs) => secs.parse().with_context(|| {
                format!("JWT_MAX_LIFETIME_SECS={secs} is not a number of seconds")
            })?,
            None => DEFAULT_MAX_LIFETIME.as_secs(),
        };
        if max_lifetime_secs == 0 {
            bail!("JWT_MAX_LIFETIME_SECS must be more than 0: no token could be accepted");
        }
        Ok(Self {
            algorithm,
            key,
            issuer: var("JWT_ISSUER").context("JWT_ISSUER is required")?,
            audience: var("JWT_AUDIENCE").context("JWT_AUDIENCE is required")?,
            leeway: Duration::from_secs(leeway_secs),
            max_lifetime: Duration::from_secs(max_lifetime_secs),
        })
    }
}

/// The claims read from a verified token: `iss`, `aud` and `nbf` are
/// checked by the validation itself, in whichever form the issuer wrote
/// them (`aud` may be a list, RFC 7519, section 4.1.3), so they are not
/// decoded again here. `exp` and `iat` are, for the lifetime cap, and so
/// that a missing `exp` is told apart from a mistyped one. `scope` is the
/// OAuth 2.0 space-separated list (RFC 8693, section 4.2).
#[derive(Debug, Deserialize)]
struct VerifiedClaims {
    sub: String,
    #[serde(default)]
    exp: NumericDate,
    #[serde(default)]
    iat: NumericDate,
    #[serde(default)]
    scope: String,
}

/// A time claim (RFC 7519, section 2, "NumericDate"), read the way the
/// validation reads `exp` and `nbf`: a non-negative number of seconds,
/// fractions rounded. Any other JSON value is `Invalid` rather than a
/// deserialization error, so the caller is told which claim is wrong, not
/// that the whole token is.
#[derive(Debug, Default, PartialEq, Eq)]
enum NumericDate {
    #[default]
    Absent,
    Seconds(u64),
    Invalid,
}

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Whole(u64),
            Fraction(f64),
            Other(IgnoredAny),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Whole(secs) => Self::Seconds(secs),
            Raw::Fraction(secs) if secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64 => {
                Self::Seconds(secs.round() as u64)
            }
            Raw::Fraction(_) | Raw::Other(IgnoredAny) => Self::Invalid,
        })
    }
}

/// The claims a development token is minted with.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    scope: String,
}

/// Why a token was refused. The text is safe to show the caller (it goes
/// into `WWW-Authenticate`'s `error_description`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token was not issued for this API (issuer or audience)")]
    WrongIssuerOrAudience,
    #[error("the token is signed with an algorithm this API does not accept")]
    WrongAlgorithm,
    #[error("the token names critical header extensions (`crit`) this server does not support")]
    CriticalHeader,
    #[error("the token claims a lifetime beyond JWT_MAX_LIFETIME_SECS")]
    LifetimeTooLong,
    #[error("the token's subject is not a valid customer id")]
    BadSubject,
    #[error("the token is malformed: {0}")]
    Malformed(String),
}

/// A caller: the token's subject (the customer) and scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    subject: String,
    scopes: Vec<String>,
}

impl Identity {
    /// An identity from a subject and scopes, checking the subject.
    pub fn new(subject: &str, scopes: &[&str]) -> Result<Self, TokenError> {
        let valid = (1..=MAX_SUBJECT_LEN).contains(&subject.len())
            && subject.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(TokenError::BadSubject);
        }
        Ok(Self {
            subject: subject.to_owned(),
            scopes: scopes
                .iter()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
                .map(|s| (*s).to_owned())
                .collect(),
        })
    }

    /// The customer id: the token's `sub`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Forwards this identity in a request's metadata.
    pub fn write_metadata(&self, metadata: &mut MetadataMap) {
        // Both are visible ASCII (checked in `new`), so they are valid
        // metadata values.
        if let Ok(subject) = MetadataValue::try_from(self.subject.as_str()) {
            metadata.insert(SUBJECT_METADATA, subject);
        }
        if let Ok(scopes) = MetadataValue::try_from(self.scopes.join(" ")) {
            metadata.insert(SCOPES_METADATA, scopes);
        }
    }

    /// The identity the gateway forwarded, as a service reads it; a call
    /// without one is `UNAUTHENTICATED`.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Self, tonic::Status> {
        let subject = metadata
            .get(SUBJECT_METADATA)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| {
                tonic::Status::unauthenticated(format!("no caller identity ({SUBJECT_METADATA})"))
            })?;
        let scopes = metadata
            .get(SCOPES_METADATA)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        Self::new(subject, &scopes.split(' ').collect::<Vec<_>>())
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))
    }
}

/// Checks bearer tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// [`VerifierConfig::max_lifetime`], in whole seconds as `exp` is.
    max_lifetime_secs: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(config: &VerifierConfig) -> anyhow::Result<Self> {
        let key = match (&config.key, config.algorithm) {
            (VerificationKey::Secret(secret), Algorithm::Hs256) => {
                if secret.len() < MIN_SECRET_LEN {
                    bail!("the HS256 secret must be at least {MIN_SECRET_LEN} bytes");
                }
                DecodingKey::from_secret(secret)
            }
            (VerificationKey::PublicKeyPem(pem), Algorithm::Rs256) => {
                DecodingKey::from_rsa_pem(pem).context("JWT_PUBLIC_KEY is no RSA public key")?
            }
            (VerificationKey::PublicKeyPem(pem), Algorithm::Es256) => {
                DecodingKey::from_ec_pem(pem).context("JWT_PUBLIC_KEY is no EC public key")?
            }
            (_, algorithm) => bail!("the key does not suit {algorithm:?}"),
        };
        let max_lifetime_secs = config.max_lifetime.as_secs();
        if max_lifetime_secs == 0 {
            bail!("the longest token lifetime (JWT_MAX_LIFETIME_SECS) must be at least 1 s");
        }
        // One algorithm only: a token may not choose how it is checked
        // (no `none`, no HS256 "signed" with the public key).
        let mut validation = Validation::new(config.algorithm.jwt());
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        // `exp` is required too, but checked in `verify`: the validation
        // reports a mistyped `exp` as missing. It still refuses a past or
        // mistyped `exp` (`validate_exp` stays on).
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        Ok(Self {
            key,
            validation,
            max_lifetime_secs,
        })
    }

    /// The caller a token names, if it is genuine and current.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let TokenData { header, claims } =
            jsonwebtoken::decode::<VerifiedClaims>(token, &self.key, &self.validation)
                .map_err(|error| refusal(error, token))?;
        // RFC 7515, section 4.1.11: a recipient must refuse a token whose
        // `crit` names an extension it does not understand, and this one
        // understands none.
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        let exp = match claims.exp {
            NumericDate::Seconds(exp) => exp,
            NumericDate::Absent => {
                return Err(TokenError::Malformed(
                    "the `exp` claim is missing".to_owned(),
                ));
            }
            NumericDate::Invalid => return Err(not_a_time("exp")),
        };
        let iat = match claims.iat {
            NumericDate::Seconds(iat) => Some(iat),
            NumericDate::Absent => None,
            NumericDate::Invalid => return Err(not_a_time("iat")),
        };
        self.check_lifetime(exp, iat)?;
        Identity::new(&claims.sub, &claims.scope.split(' ').collect::<Vec<_>>())
    }

    /// Refuses a token good for longer than the configured lifetime: by
    /// the gateway's clock (`exp` at most the lifetime and the leeway after
    /// now) and by the issuer's (`exp` at most the lifetime after `iat`).
    /// Saturating, so an `exp` of 2^63 or `u64::MAX` is refused, not
    /// wrapped round to a small number.
    fn check_lifetime(&self, exp: u64, iat: Option<u64>) -> Result<(), TokenError> {
        // The clock the validation has just read.
        let latest = jsonwebtoken::get_current_timestamp()
            .saturating_add(self.max_lifetime_secs)
            .saturating_add(self.validation.leeway);
        let too_long =
            exp > latest || iat.is_some_and(|iat| exp.saturating_sub(iat) > self.max_lifetime_secs);
        if too_long {
            return Err(TokenError::LifetimeTooLong);
        }
        Ok(())
    }
}

/// Why the validation refused a token, in words for the caller.
fn refusal(error: jsonwebtoken::errors::Error, token: &str) -> TokenError {
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::WrongIssuerOrAudience,
        ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
        ErrorKind::MissingRequiredClaim(claim) => {
            TokenError::Malformed(format!("the `{claim}` claim is missing"))
        }
        // `exp` or `nbf`, named by the validation, not the caller.
        ErrorKind::InvalidClaimFormat(claim) => not_a_time(claim),
        // The validation reads `exp` and `nbf` into numbers and fails on
        // some other shapes (an object) as on bad JSON.
        ErrorKind::Json(_) => mistyped_time_claim(token).unwrap_or_else(malformed),
        _ => malformed(),
    }
}

/// The parser's own words may quote what the caller wrote; they are not
/// repeated back.
fn malformed() -> TokenError {
    TokenError::Malformed("not a well-formed JWT".to_owned())
}

/// The time claim of the wrong type in `token`'s claims, if any. Only for
/// naming the error: it reads the claims without checking the signature,
/// and the token is refused either way.
fn mistyped_time_claim(token: &str) -> Option<TokenError> {
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    ["exp", "nbf", "iat"]
        .into_iter()
        .find(|claim| {
            claims
                .get(claim)
                .is_some_and(|value| !value.as_f64().is_some_and(|seconds| seconds >= 0.0))
        })
        .map(not_a_time)
}

/// A time claim that is there but is no NumericDate (RFC 7519, section 2):
/// said as such, not as missing or as a malformed token.
fn not_a_time(claim: &str) -> TokenError {
    TokenError::Malformed(format!(
        "the `{claim}` claim must be a number of seconds since 1970"
    ))
}

/// Signs tokens: for development (`cargo xtask token`), the test kit and
/// the load generator, with the same HS256 secret the gateway is given.
pub struct Minter {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl Minter {
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> anyhow::Result<Self> {
        if secret.len() < MIN_SECRET_LEN {
            bail!("the HS256 secret must be at least {MIN_SECRET_LEN} bytes");
        }
        Ok(Self {
            key: EncodingKey::from_secret(secret),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A token for `subject` with `scopes`, valid for `ttl` from now.
    pub fn mint(&self, subject: &str, scopes: &[&str], ttl: Duration) -> anyhow::Result<String> {
        let identity = Identity::new(subject, scopes)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        let claims = Claims {
            sub: identity.subject,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            scope: identity.scopes.join(" "),
        };
        jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.key,
        )
        .context("signing the token")
    }
}

#[cfg(test)]
mod tests;
