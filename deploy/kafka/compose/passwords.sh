#!/bin/sh
# Compose's `kafka-secrets` (docker-compose.yml): gives the broker's admin
# and each service a random password, once. Each lives in a named volume of
# its own (kafka-login-<who>, file `password`), mounted only where it is
# needed: the admin's into the broker and kafka-setup, a service's into that
# service and kafka-setup. A password that exists is kept; `docker compose
# down -v` drops them with the broker's data.
#
# Runs as root (the fresh volumes belong to root) with CHOWN as its only
# capability, and hands each file to its readers: the broker runs as uid
# 1000 (the apache/kafka image's appuser), the Shipshape image as 65532.
set -eu
umask 077

# 48 hex digits: 192 bits from the kernel, and nothing to quote anywhere.
new_password() {
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

# issue WHO OWNER: the password in /secrets/kafka-WHO, unless there is one.
issue() {
    dir=/secrets/kafka-$1
    if [ -s "$dir/password" ]; then
        echo "kafka-secrets: $1: kept"
        return
    fi
    rm -f "$dir/.password.new"
    new_password >"$dir/.password.new"
    chmod 0440 "$dir/.password.new"
    chown "$2" "$dir/.password.new"
    mv "$dir/.password.new" "$dir/password"
    echo "kafka-secrets: $1: new password"
}

# The broker reads the admin's as its owner, kafka-setup through the group.
issue admin 1000:65532
for service in order inventory payment shipping; do
    issue "$service" 65532:65532
done
