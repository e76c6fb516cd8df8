#!/usr/bin/env bash
# The web shop in a real browser: Debian's Chromium, driven headless by
# playwright-core (testing/browser/shop.test.mjs) against a whole stack.
# See xtask/src/browser_tests.rs for what runs.
#
# Installs Debian's chromium package when it is missing (playwright-core
# never downloads a browser) and the pinned playwright-core from the lock
# file (npm's own cache makes that a few seconds), then runs `cargo xtask browser-tests`, which builds the services,
# starts the stack on free ports with fresh databases, runs the tests,
# saves a screenshot of each page and stops the stack.
#
#   bash ci/browser-tests.sh [cargo xtask browser-tests ARGS...]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
    echo "==> installing Debian's chromium"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version

echo "==> installing playwright-core (testing/browser/package-lock.json)"
npm ci --prefix testing/browser --no-audit --no-fund --loglevel=error

exec cargo xtask browser-tests "$@"
