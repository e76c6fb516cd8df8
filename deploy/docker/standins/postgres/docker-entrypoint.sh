#!/usr/bin/env bash
# The postgres image's contract, on Debian's PostgreSQL: the first start with
# an empty PGDATA creates the cluster with POSTGRES_USER (default postgres)
# as its superuser, password POSTGRES_PASSWORD (required), creates
# POSTGRES_DB (default: the user's name), then runs every file in
# /docker-entrypoint-initdb.d in name order (*.sh executed if executable and
# sourced if not, *.sql through psql) against a server that listens on the
# socket only; later starts find the cluster and skip all of it. Started as
# root, it hands PGDATA to postgres and runs as postgres. TCP logins need a
# password (scram-sha-256); the socket trusts, as the image's does.
set -Eeuo pipefail

bindir=$(echo /usr/lib/postgresql/*/bin)
export PATH="$bindir:$PATH"
export PGDATA=${PGDATA:-/var/lib/postgresql/data}

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres: POSTGRES_PASSWORD must be set for a new cluster" >&2
        exit 1
    fi
    export POSTGRES_USER=${POSTGRES_USER:-postgres}
    export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    printf '%s\n' 'host all all all scram-sha-256' >>"$PGDATA/pg_hba.conf"

    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
    export PGUSER=$POSTGRES_USER PGDATABASE=postgres
    if [ "$POSTGRES_DB" != postgres ]; then
        psql --no-psqlrc -v ON_ERROR_STOP=1 -v db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    export PGDATABASE=$POSTGRES_DB
    for file in /docker-entrypoint-initdb.d/*; do
        [ -e "$file" ] || continue
        case "$file" in
            *.sh)
                if [ -x "$file" ]; then
                    echo "postgres: running $file"
                    "$file"
                else
                    echo "postgres: sourcing $file"
                    # shellcheck disable=SC1090
                    . "$file"
                fi
                ;;
            *.sql)
                echo "postgres: running $file"
                psql --no-psqlrc -v ON_ERROR_STOP=1 -f "$file"
                ;;
            *) echo "postgres: ignoring $file" ;;
        esac
    done
    unset PGUSER PGDATABASE
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres: init process complete"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
