#!/usr/bin/env bash
# API contract check: schemathesis against the live gateway, using the
# OpenAPI document the gateway serves at /openapi.json (generated from the
# code). Fails on any 5xx, any response that does not match the document,
# or any crash. See xtask/src/schemathesis.rs for what runs.
#
# Installs a pinned schemathesis once into a virtualenv cached outside the
# clone (reused by later runs; pip runs only when it is missing or has
# another version), then runs `cargo xtask schemathesis` with it, which
# builds the services, starts the stack on free ports with fresh databases,
# runs the tests and stops the stack.
#
#   bash ci/schemathesis.sh [cargo xtask schemathesis ARGS...]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=4.32.5
venv=${SHIPSHAPE_SCHEMATHESIS_VENV:-$HOME/.cache/shipshape/schemathesis-venv}
schemathesis=$venv/bin/schemathesis

installed=$("$schemathesis" --version 2>/dev/null || true)
if [ "$installed" != "schemathesis, version $version" ]; then
    echo "==> installing schemathesis $version into $venv"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi

SHIPSHAPE_SCHEMATHESIS=$schemathesis exec cargo xtask schemathesis "$@"
