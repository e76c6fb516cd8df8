//! How one broker is configured: its ports and directories, the
//! `server.properties` and logging it runs with, and the cluster id its
//! storage is formatted with.

use std::fmt::Write as _;
use std::path::PathBuf;

use shipshape_kafka::Password;

/// A random cluster id as Kafka writes them: 16 random bytes in URL-safe
/// base64 without padding (22 characters), never starting with `-`, which
/// the storage tool would read as an option (Kafka's own ids avoid it too).
pub(super) fn cluster_id() -> String {
    loop {
        let id = encoded_uuid();
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// A random UUID in URL-safe base64 without padding.
fn encoded_uuid() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits = 0u32;
    let mut held = 0;
    let mut id = String::with_capacity(22);
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        held += 8;
        while held >= 6 {
            held -= 6;
            id.push(char::from(ALPHABET[((bits >> held) & 63) as usize]));
        }
    }
    if held > 0 {
        id.push(char::from(ALPHABET[((bits << (6 - held)) & 63) as usize]));
    }
    id
}

/// The broker's super user: the broker itself, the setup and the tests'
/// own clients log in as it.
pub const ADMIN_USER: &str = "admin";

/// Where and how one broker runs.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The port clients connect to (the `CLIENTS` listener).
    pub port: u16,
    /// The KRaft controller's port.
    pub controller_port: u16,
    /// The port the broker tells clients to connect to: a fault proxy in
    /// front of it, or `port` itself.
    pub advertised_port: u16,
    /// Its configuration and data; kept across restarts.
    pub data_dir: PathBuf,
    /// Where its output goes (appended).
    pub log_path: PathBuf,
    /// As in [`crate::StackOptions::own_process_group`].
    pub own_process_group: bool,
    /// Whether clients log in and an authorizer checks them (the default).
    /// Off, the listener is PLAINTEXT and anyone may do anything: only for
    /// measuring what the security costs.
    pub secured: bool,
    /// With it (and `secured`), the client listener is `SASL_SSL`: the
    /// broker presents this certificate, as a production listener would.
    pub tls: Option<BrokerTls>,
}

/// What a broker with a TLS listener presents, and the CA its clients
/// (itself included, on the inter-broker listener) trust.
#[derive(Clone)]
pub struct BrokerTls {
    /// The broker's certificate (PEM), naming 127.0.0.1.
    pub certificate: String,
    /// Its private key (PEM, PKCS#8, unencrypted).
    pub key: String,
    /// The CA that issued it (PEM).
    pub ca: String,
    /// The same CA as a file, for clients' `ssl.ca.location`.
    pub ca_path: PathBuf,
}

impl std::fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerTls")
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

/// `pem` as one value of a `.properties` file: Java reads `\n` as a line
/// break, and Kafka's PEM options take the text with its line breaks.
fn properties_value(pem: &str) -> String {
    pem.trim_end().replace("\r\n", "\n").replace('\n', "\\n")
}

impl BrokerConfig {
    /// A broker on `port` (and `controller_port`) advertising itself.
    pub fn new(port: u16, controller_port: u16, data_dir: PathBuf, log_path: PathBuf) -> Self {
        Self {
            port,
            controller_port,
            advertised_port: port,
            data_dir,
            log_path,
            own_process_group: false,
            secured: true,
            tls: None,
        }
    }

    /// The broker's `server.properties`, with `admin_password` as the
    /// super user's.
    ///
    /// Clients log in with SCRAM-SHA-512 on the one client listener, which
    /// the broker also uses to reach itself (as the super user, whose
    /// credential the storage is formatted with). The controller listener
    /// takes the super user only, with PLAIN: SCRAM's credentials live in
    /// the metadata log the controller serves, so it cannot check them
    /// there. The authorizer refuses whatever no ACL allows.
    pub(super) fn server_properties(&self, admin_password: &Password) -> String {
        let Self {
            port,
            controller_port,
            advertised_port,
            ..
        } = self;
        let mut properties = String::new();
        let mut set = |key: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(properties, "{key}={value}");
        };
        set("process.roles", &"broker,controller");
        set("node.id", &1);
        set(
            "controller.quorum.voters",
            &format!("1@127.0.0.1:{controller_port}"),
        );
        set(
            "listeners",
            &format!("CLIENTS://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
        );
        set(
            "advertised.listeners",
            &format!("CLIENTS://127.0.0.1:{advertised_port}"),
        );
        set("controller.listener.names", &"CONTROLLER");
        set("inter.broker.listener.name", &"CLIENTS");
        if self.secured {
            let clients = if self.tls.is_some() {
                "SASL_SSL"
            } else {
                "SASL_PLAINTEXT"
            };
            set(
                "listener.security.protocol.map",
                &format!("CLIENTS:{clients},CONTROLLER:SASL_PLAINTEXT"),
            );
            // The keystore and truststore inline, so no password protects
            // them (a PEM keystore file would need an encrypted key); the
            // file they are in is its owner's only. The broker reaches
            // itself over this listener too, and checks the name like any
            // client.
            if let Some(tls) = &self.tls {
                set("ssl.keystore.type", &"PEM");
                set(
                    "ssl.keystore.certificate.chain",
                    &properties_value(&tls.certificate),
                );
                set("ssl.keystore.key", &properties_value(&tls.key));
                set("ssl.truststore.type", &"PEM");
                set("ssl.truststore.certificates", &properties_value(&tls.ca));
            }
            let password = admin_password.expose();
            set("sasl.mechanism.inter.broker.protocol", &"SCRAM-SHA-512");
            set(
                "listener.name.clients.sasl.enabled.mechanisms",
                &"SCRAM-SHA-512",
            );
            set(
                "listener.name.clients.scram-sha-512.sasl.jaas.config",
                &format!(
                    "org.apache.kafka.common.security.scram.ScramLoginModule required \
                     username=\"{ADMIN_USER}\" password=\"{password}\";"
                ),
            );
            set("sasl.mechanism.controller.protocol", &"PLAIN");
            set("listener.name.controller.sasl.enabled.mechanisms", &"PLAIN");
            set(
                "listener.name.controller.plain.sasl.jaas.config",
                &format!(
                    "org.apache.kafka.common.security.plain.PlainLoginModule required \
                     username=\"{ADMIN_USER}\" password=\"{password}\" \
                     user_{ADMIN_USER}=\"{password}\";"
                ),
            );
            set(
                "authorizer.class.name",
                &"org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            );
            set("super.users", &format!("User:{ADMIN_USER}"));
            set("allow.everyone.if.no.acl.found", &false);
        } else {
            set(
                "listener.security.protocol.map",
                &"CLIENTS:PLAINTEXT,CONTROLLER:PLAINTEXT",
            );
        }
        set("log.dirs", &self.data_dir.join("kraft-logs").display());
        // Topics are made by the services, with the partition count they
        // are configured with; a typo must not create one.
        set("auto.create.topics.enable", &false);
        set("num.partitions", &1);
        // One node: every internal topic has one replica.
        set("offsets.topic.replication.factor", &1);
        set("offsets.topic.num.partitions", &10);
        set("transaction.state.log.replication.factor", &1);
        set("transaction.state.log.min.isr", &1);
        set("share.coordinator.state.topic.replication.factor", &1);
        set("share.coordinator.state.topic.min.isr", &1);
        // The first member of a group is assigned at once, not after 3 s.
        set("group.initial.rebalance.delay.ms", &0);
        // The consumer protocol (KIP-848) keeps its timeouts on the broker:
        // as short as the classic protocol's in tests, so a killed member's
        // partitions move on within seconds.
        set("group.consumer.min.session.timeout.ms", &1000);
        set("group.consumer.session.timeout.ms", &6000);
        set("group.consumer.min.heartbeat.interval.ms", &500);
        set("group.consumer.heartbeat.interval.ms", &1000);
        properties
    }
}

/// The broker's logging: everything to standard output, which goes to its
/// log file; the chattiest loggers only from warnings up.
pub(super) const LOG4J2: &str = "\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
logger.storage.name = org.apache.kafka.storage
logger.storage.level = warn
logger.log.name = kafka.log
logger.log.level = warn
";
