//! How a client reaches the broker: its addresses, whether it logs in
//! (SASL) and whether the connection is encrypted (TLS).

use std::path::PathBuf;

use anyhow::bail;
use rdkafka::ClientConfig;
use shipshape_runtime::config;

/// The broker listener's security protocol, as Kafka names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// No login, no encryption: only for a broker on loopback.
    Plaintext,
    /// A SASL login over an unencrypted connection. SCRAM never sends the
    /// password, but everything else travels in the clear.
    SaslPlaintext,
    /// A SASL login over TLS.
    SaslSsl,
}

impl Protocol {
    /// The name librdkafka's `security.protocol` takes.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }

    fn logs_in(self) -> bool {
        self != Protocol::Plaintext
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.to_ascii_lowercase().as_str() {
            "plaintext" => Ok(Protocol::Plaintext),
            "sasl_plaintext" => Ok(Protocol::SaslPlaintext),
            "sasl_ssl" => Ok(Protocol::SaslSsl),
            _ => Err(format!(
                "`{value}` is not one of PLAINTEXT, SASL_PLAINTEXT, SASL_SSL"
            )),
        }
    }
}

/// How a SASL login proves the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// SCRAM with SHA-512: a login never sends the password, and the
    /// broker keeps only a salted hash of it. What every principal of ours
    /// uses.
    ScramSha512,
    /// SCRAM with SHA-256, for brokers configured that way.
    ScramSha256,
}

impl Mechanism {
    /// The name librdkafka's `sasl.mechanism` and Kafka's configuration use.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

impl std::str::FromStr for Mechanism {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-512" => Ok(Mechanism::ScramSha512),
            "SCRAM-SHA-256" => Ok(Mechanism::ScramSha256),
            _ => Err(format!(
                "`{value}` is not one of SCRAM-SHA-512, SCRAM-SHA-256"
            )),
        }
    }
}

/// A password, kept out of `Debug` output and so out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// A random password: a version-4 UUID's 32 hex digits (122 random
    /// bits from the operating system).
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A principal's name and password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Password,
}

impl Login {
    /// A SCRAM-SHA-512 login, the kind every principal of ours has.
    pub fn scram(username: impl Into<String>, password: Password) -> Self {
        Self {
            mechanism: Mechanism::ScramSha512,
            username: username.into(),
            password,
        }
    }
}

/// Where the broker is and how to log in to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Bootstrap addresses, comma separated.
    pub brokers: String,
    pub protocol: Protocol,
    /// Present exactly when the protocol logs in.
    pub login: Option<Login>,
    /// The CA that signed the broker's certificate (PEM), when it is not
    /// one the system trusts; only with TLS.
    pub ca_location: Option<PathBuf>,
}

impl Connection {
    /// No login, no TLS.
    pub fn plaintext(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            protocol: Protocol::Plaintext,
            login: None,
            ca_location: None,
        }
    }

    /// A SCRAM-SHA-512 login over an unencrypted connection, as the local
    /// stack and the tests use on loopback.
    pub fn sasl_plaintext(brokers: impl Into<String>, login: Login) -> Self {
        Self {
            brokers: brokers.into(),
            protocol: Protocol::SaslPlaintext,
            login: Some(login),
            ca_location: None,
        }
    }

    /// A SCRAM-SHA-512 login over TLS, trusting the CA in `ca_location`
    /// (PEM) or, without it, the system's.
    pub fn sasl_ssl(
        brokers: impl Into<String>,
        login: Login,
        ca_location: Option<PathBuf>,
    ) -> Self {
        Self {
            brokers: brokers.into(),
            protocol: Protocol::SaslSsl,
            login: Some(login),
            ca_location,
        }
    }

    /// From the environment: `KAFKA_BROKERS` (default `127.0.0.1:9092`),
    /// `KAFKA_SECURITY_PROTOCOL` (`PLAINTEXT`, the default, `SASL_PLAINTEXT`
    /// or `SASL_SSL`), with SASL `KAFKA_SASL_USERNAME` and
    /// `KAFKA_SASL_PASSWORD` (or `KAFKA_SASL_PASSWORD_FILE`) and
    /// `KAFKA_SASL_MECHANISM` (default `SCRAM-SHA-512`), with TLS
    /// `KAFKA_SSL_CA_LOCATION` (optional). A setting the protocol would
    /// ignore is refused: a forgotten protocol must not silently drop the
    /// login.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// As [`Connection::from_env`], with the variables from `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let protocol = config::var_or_in(&var, "KAFKA_SECURITY_PROTOCOL", Protocol::Plaintext)?;
        let mechanism = config::var_or_in(&var, "KAFKA_SASL_MECHANISM", Mechanism::ScramSha512)?;
        let username = var("KAFKA_SASL_USERNAME");
        let password = config::value_or_file_in(lookup, "KAFKA_SASL_PASSWORD")?;
        let login = match (protocol.logs_in(), username, password) {
            (true, Some(username), Some(password)) => Some(Login {
                mechanism,
                username,
                password: Password::new(password),
            }),
            (true, _, _) => bail!(
                "KAFKA_SECURITY_PROTOCOL={} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD \
                 (or KAFKA_SASL_PASSWORD_FILE)",
                protocol.name().to_ascii_uppercase()
            ),
            (false, None, None) => None,
            (false, _, _) => bail!(
                "KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD is set, but \
                 KAFKA_SECURITY_PROTOCOL is PLAINTEXT, which would not use them: set it to \
                 SASL_PLAINTEXT or SASL_SSL"
            ),
        };
        let ca_location = var("KAFKA_SSL_CA_LOCATION").map(PathBuf::from);
        if ca_location.is_some() && protocol != Protocol::SaslSsl {
            bail!("KAFKA_SSL_CA_LOCATION is set, but KAFKA_SECURITY_PROTOCOL is not SASL_SSL");
        }
        Ok(Self {
            brokers: var("KAFKA_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".to_owned()),
            protocol,
            login,
            ca_location,
        })
    }

    /// The principal this connection logs in as, if it logs in.
    pub fn username(&self) -> Option<&str> {
        self.login.as_ref().map(|login| login.username.as_str())
    }

    /// A client configuration with the addresses and the security settings;
    /// the caller adds what its kind of client needs.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            // No client metrics are pushed to the broker (KIP-714);
            // without this the client keeps asking for a subscription.
            .set("enable.metrics.push", "false")
            .set("security.protocol", self.protocol.name());
        if let Some(login) = &self.login {
            config
                .set("sasl.mechanism", login.mechanism.name())
                .set("sasl.username", &login.username)
                .set("sasl.password", login.password.expose());
        }
        if let Some(ca) = &self.ca_location {
            config.set("ssl.ca.location", ca.display().to_string());
        }
        config
    }

    /// The same broker, logged in as `login` instead.
    pub fn as_login(&self, login: Login) -> Self {
        let protocol = match self.protocol {
            Protocol::Plaintext => Protocol::SaslPlaintext,
            other => other,
        };
        Self {
            brokers: self.brokers.clone(),
            protocol,
            login: Some(login),
            ca_location: self.ca_location.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> anyhow::Result<Connection> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Connection::from_lookup(&|name| vars.get(name).cloned())
    }

    #[test]
    fn without_settings_it_is_plaintext_to_the_local_broker() {
        let connection = from(&[]).expect("defaults");
        assert_eq!(connection, Connection::plaintext("127.0.0.1:9092"));
        assert_eq!(
            connection.client_config().get("security.protocol"),
            Some("plaintext")
        );
        assert_eq!(connection.client_config().get("sasl.username"), None);
    }

    #[test]
    fn a_sasl_login_reaches_the_client_configuration() {
        let connection = from(&[
            ("KAFKA_BROKERS", "kafka:9093"),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_USERNAME", "payment"),
            ("KAFKA_SASL_PASSWORD", "s3cret"),
            ("KAFKA_SSL_CA_LOCATION", "/etc/kafka-ca/ca.crt"),
        ])
        .expect("a SASL_SSL login");
        let config = connection.client_config();
        assert_eq!(config.get("bootstrap.servers"), Some("kafka:9093"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("payment"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/kafka-ca/ca.crt"));
        assert!(
            !format!("{connection:?}").contains("s3cret"),
            "{connection:?}"
        );
    }

    #[test]
    fn the_password_may_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("kafka-login-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("password");
        std::fs::write(&file, "from-a-file\n").expect("write");
        let path = file.display().to_string();
        let connection = from(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAFKA_SASL_USERNAME", "order"),
            ("KAFKA_SASL_PASSWORD_FILE", &path),
        ])
        .expect("a password file");
        let _ = std::fs::remove_dir_all(&dir);
        let login = connection.login.expect("a login");
        assert_eq!(login.password, Password::new("from-a-file"));
    }

    #[test]
    fn settings_the_protocol_would_ignore_are_refused() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")],
                "needs KAFKA_SASL_USERNAME",
            ),
            (
                &[
                    ("KAFKA_SASL_USERNAME", "order"),
                    ("KAFKA_SASL_PASSWORD", "x"),
                ],
                "is PLAINTEXT",
            ),
            (&[("KAFKA_SECURITY_PROTOCOL", "ssl")], "not one of"),
            (
                &[
                    ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                    ("KAFKA_SASL_USERNAME", "order"),
                    ("KAFKA_SASL_PASSWORD", "x"),
                    ("KAFKA_SASL_MECHANISM", "GSSAPI"),
                ],
                "not one of",
            ),
            (&[("KAFKA_SSL_CA_LOCATION", "/ca.crt")], "not SASL_SSL"),
        ];
        for (vars, expected) in cases {
            let error = format!("{:#}", from(vars).expect_err(expected));
            assert!(error.contains(expected), "{vars:?}: {error}");
        }
    }
}
