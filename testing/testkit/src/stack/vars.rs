//! The names of the environment variables the processes read: the process
//! contract, in one place.

/// Every process: `host:port` of its ops server (`/healthz`, `/readyz`).
pub const OPS_ADDR: &str = "OPS_ADDR";
/// Every process: the log filter.
pub const RUST_LOG: &str = "RUST_LOG";
/// Every process: `json` for one JSON object per log line.
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// Order, inventory, payment, shipping: the URL of its own database.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Order, inventory, payment, shipping: the broker's `host:port`.
pub const KAFKA_BROKERS: &str = "KAFKA_BROKERS";
/// Same: `SASL_PLAINTEXT` on the test kit's brokers, which want a login
/// (`SASL_SSL` on one with a TLS listener).
pub const KAFKA_SECURITY_PROTOCOL: &str = "KAFKA_SECURITY_PROTOCOL";
/// Same: the CA of a broker's TLS listener.
pub const KAFKA_SSL_CA_LOCATION: &str = "KAFKA_SSL_CA_LOCATION";
/// Same: the service's own principal on the broker.
pub const KAFKA_SASL_USERNAME: &str = "KAFKA_SASL_USERNAME";
/// Same: its password.
pub const KAFKA_SASL_PASSWORD: &str = "KAFKA_SASL_PASSWORD";
/// Same: put before every topic and group name, on a shared broker.
pub const KAFKA_TOPIC_PREFIX: &str = "KAFKA_TOPIC_PREFIX";
/// Same: the partition count of the topics the service creates.
pub const KAFKA_TOPIC_PARTITIONS: &str = "KAFKA_TOPIC_PARTITIONS";
/// Order, inventory, payment, shipping: the consumer-group session timeout.
pub const KAFKA_SESSION_TIMEOUT_MS: &str = "KAFKA_SESSION_TIMEOUT_MS";
/// Gateway, order and inventory: the PEM certificate naming the process,
/// which it presents as a gRPC server and client (mutual TLS).
pub const GRPC_TLS_CERT: &str = "GRPC_TLS_CERT";
/// Same: its private key.
pub const GRPC_TLS_KEY: &str = "GRPC_TLS_KEY";
/// Same: the CA whose certificates it accepts from its peers.
pub const GRPC_TLS_CA: &str = "GRPC_TLS_CA";
/// Order and inventory: where the gRPC server listens.
pub const GRPC_ADDR: &str = "GRPC_ADDR";
/// Order and gateway: the inventory service's gRPC URL.
pub const INVENTORY_URL: &str = "INVENTORY_URL";
/// Order: how long an order may stay PENDING (default 30000).
pub const SAGA_DEADLINE_MS: &str = "SAGA_DEADLINE_MS";
/// Order: how often expired orders are looked for.
pub const SAGA_SWEEP_INTERVAL_MS: &str = "SAGA_SWEEP_INTERVAL_MS";
/// Payment: the PSP simulator's HTTP URL.
pub const PSP_URL: &str = "PSP_URL";
/// Payment: the timeout of one PSP call.
pub const PSP_TIMEOUT_MS: &str = "PSP_TIMEOUT_MS";
/// Gateway and PSP simulator: where the HTTP server listens.
pub const HTTP_ADDR: &str = "HTTP_ADDR";
/// Gateway: the `/metrics` of every process, as `name=url` pairs, for the
/// operator page.
pub const OPERATOR_METRICS_URLS: &str = "OPERATOR_METRICS_URLS";
/// Gateway: the PSP simulator whose faults the operator page sets.
pub const PSP_ADMIN_URL: &str = "PSP_ADMIN_URL";
/// Gateway: the order service's gRPC URL.
pub const ORDER_URL: &str = "ORDER_URL";
/// Gateway: who issues the bearer tokens it accepts, and for whom.
pub const JWT_ISSUER: &str = "JWT_ISSUER";
pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
/// Gateway: the HS256 secret bearer tokens are checked with.
pub const JWT_HS256_SECRET: &str = "JWT_HS256_SECRET";
/// PSP simulator: the delay of the "slow card".
pub const PSP_SLOW_CARD_DELAY_MS: &str = "PSP_SLOW_CARD_DELAY_MS";
/// PSP simulator: the file its ledger is journaled to and restored from,
/// so that a restart (even after SIGKILL) forgets no charge.
pub const PSP_JOURNAL_PATH: &str = "PSP_JOURNAL_PATH";
