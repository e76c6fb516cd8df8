#!/usr/bin/env bash
# Runs deploy/postgres/init/10-shipshape-databases.sh the way the postgres
# image does (as the superuser, over the local socket) against a private,
# throwaway PostgreSQL cluster, then checks what the services rely on: each
# role logs in over TCP with its password, owns its database and can create
# tables there, and cannot connect to another service's database.
#
# Needs PostgreSQL's server binaries (initdb, pg_ctl; Debian: postgresql).
# Run as root, it runs the cluster as the `postgres` user.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
init_script="$repo/deploy/postgres/init/10-shipshape-databases.sh"

bindir=""
if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
    bindir=$(pg_config --bindir)
fi
if [ -z "$bindir" ]; then
    for candidate in /usr/lib/postgresql/*/bin; do
        if [ -x "$candidate/initdb" ]; then bindir=$candidate; fi
    done
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "initdb not found: install PostgreSQL's server package" >&2
    exit 1
fi

work=$(mktemp -d /tmp/shipshape-pg-init.XXXXXX)
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$work"
    as_owner=(runuser -u postgres --)
fi
cleanup() {
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_owner[@]}" "$bindir/initdb" -D "$work/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log"; exit 1; }
"${as_owner[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$work" start >/dev/null \
    || { cat "$work/server.log"; exit 1; }

# As the image runs it: superuser over the socket, one password overridden.
"${as_owner[@]}" env PGHOST="$work" PGPORT="$port" POSTGRES_USER=postgres POSTGRES_DB=postgres \
    SHIPSHAPE_PAYMENT_DB_PASSWORD=from-the-environment sh "$init_script"

failures=0
check() {
    local what=$1
    shift
    if "$@" >"$work/check.log" 2>&1; then
        echo "ok: $what"
    else
        echo "FAILED: $what"
        sed 's/^/    /' "$work/check.log"
        failures=$((failures + 1))
    fi
}
refused() { ! "$@"; }
sql_as() { # service password database sql
    PGPASSWORD=$2 psql --no-psqlrc -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" \
        -U "shipshape_$1" -d "$3" -c "$4"
}

for service in order inventory shipping; do
    check "$service logs in with its default password and creates a table in its database" \
        sql_as "$service" "dev-only-$service-password" "shipshape_$service" \
        "CREATE TABLE t (id int); DROP TABLE t;"
done
check "payment's password comes from SHIPSHAPE_PAYMENT_DB_PASSWORD" \
    sql_as payment from-the-environment shipshape_payment "SELECT 1"
check "payment's default password is not accepted once overridden" \
    refused sql_as payment dev-only-payment-password shipshape_payment "SELECT 1"
check "order cannot connect to inventory's database" \
    refused sql_as order dev-only-order-password shipshape_inventory "SELECT 1"
check "shipping cannot connect to payment's database" \
    refused sql_as shipping dev-only-shipping-password shipshape_payment "SELECT 1"
owned_databases() {
    local count
    count=$(PGHOST="$work" PGPORT="$port" psql --no-psqlrc -U postgres -d postgres -tAc \
        "SELECT count(*) FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
         WHERE d.datname LIKE 'shipshape\\_%' AND r.rolname = d.datname")
    [ "$count" = 4 ]
}
check "each of the four databases is owned by the role of the same name" owned_databases

if [ "$failures" -gt 0 ]; then
    echo "postgres init: $failures check(s) failed"
    exit 1
fi
echo "postgres init: all checks passed"
