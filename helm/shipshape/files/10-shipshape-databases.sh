#!/bin/sh
# Creates one login role and one database per Shipshape service, the role
# owning its database, and takes the default CONNECT right away from PUBLIC so
# that no service can open another service's database.
#
# The official postgres image runs this once, on an empty data directory, as
# the superuser (POSTGRES_USER) over the local socket; docker-compose.yml
# mounts this folder, and the Helm chart's development Postgres mounts a copy
# (helm/shipshape/files/, kept identical by scripts/render-k8s.sh).
#
# Passwords come from SHIPSHAPE_<SERVICE>_DB_PASSWORD. The defaults are
# DEVELOPMENT passwords, for a stack on your own machine only. Passwords end
# up inside DATABASE_URLs, so keep them URL-safe (letters, digits, - . _ ~).
set -eu

create_service_database() {
    service=$1
    password=$2
    # psql variables (:"name" quotes an identifier, :'name' a literal) keep the
    # values out of the SQL text; they are expanded in script input only.
    psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" \
        --dbname "${POSTGRES_DB:-postgres}" \
        -v name="shipshape_$service" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
    echo "shipshape: created role and database shipshape_$service"
}

create_service_database order "${SHIPSHAPE_ORDER_DB_PASSWORD:-dev-only-order-password}"
create_service_database inventory "${SHIPSHAPE_INVENTORY_DB_PASSWORD:-dev-only-inventory-password}"
create_service_database payment "${SHIPSHAPE_PAYMENT_DB_PASSWORD:-dev-only-payment-password}"
create_service_database shipping "${SHIPSHAPE_SHIPPING_DB_PASSWORD:-dev-only-shipping-password}"
