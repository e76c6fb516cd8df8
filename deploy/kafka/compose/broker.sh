#!/usr/bin/env bash
# The Compose broker's entrypoint (docker-compose.yml, service `kafka`, in
# the apache/kafka image): writes the broker's configuration with the admin's
# password, formats the storage on the first start with the admin's SCRAM
# credential, and runs the broker with the image's own scripts.
#
#   CLUSTER_ID                          the cluster id the storage is formatted with
#   SHIPSHAPE_KAFKA_ADMIN_PASSWORD_FILE the admin's password (kafka-secrets made it)
#
# The admin is formatted in once: its credential then lives in the metadata
# log, and the broker uses it to reach itself. So the storage remembers the
# password's SHA-256 (admin-scram.sha256, beside the log) and a start with
# another password stops here, with what to do, instead of a broker locked
# out of itself.
set -euo pipefail

fail() {
    echo "kafka: $*" >&2
    exit 1
}

data=/var/lib/kafka/data
log_dir=$data/logs
marker=$data/admin-scram.sha256
template=/etc/shipshape/kafka/server.properties
config_dir=/tmp/shipshape-kafka

password_file=${SHIPSHAPE_KAFKA_ADMIN_PASSWORD_FILE:?the admin password file is not set}
[ -r "$password_file" ] || fail "cannot read the admin password ($password_file): did kafka-secrets run?"
password=$(tr -d '\r\n' <"$password_file")
# Quoted in JAAS settings and in --add-scram's list: plain characters only.
[[ $password =~ ^[A-Za-z0-9._~-]+$ ]] ||
    fail "the admin password in $password_file must be letters, digits and ._~- only"

umask 077
mkdir -p "$config_dir"
{
    cat "$template"
    echo "listener.name.clients.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$password\";"
    echo "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$password\" user_admin=\"$password\";"
} >"$config_dir/server.properties"
# The healthcheck's login (kafka-broker-api-versions.sh --command-config).
cat >"$config_dir/admin.properties" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$password";
PROPERTIES

digest=$(printf '%s' "$password" | sha256sum | cut -d' ' -f1)
if [ -f "$log_dir/meta.properties" ]; then
    [ -f "$marker" ] ||
        fail "$log_dir was formatted without the admin's login; \`docker compose down -v\` starts over"
    [ "$(cat "$marker")" = "$digest" ] ||
        fail "the admin password is not the one the storage was formatted with (was the kafka-login-admin volume removed?); \`docker compose down -v\` starts over"
else
    # A volume from before the broker had logins kept its log at the root.
    [ ! -f "$data/meta.properties" ] ||
        fail "the kafka-data volume holds a broker from before logins; \`docker compose down -v\` starts over"
    # Remembered first: a format cut short is simply done again.
    printf '%s\n' "$digest" >"$marker"
    /opt/kafka/bin/kafka-storage.sh format --cluster-id "${CLUSTER_ID:?}" \
        --config "$config_dir/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=admin,password=$password]"
fi

exec /opt/kafka/bin/kafka-server-start.sh "$config_dir/server.properties"
