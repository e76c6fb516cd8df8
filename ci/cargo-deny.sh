#!/usr/bin/env bash
# Dependency policy check (deny.toml): licenses, bans, sources.
# Installs a pinned cargo-deny once into a cache outside the clone (reused by
# later runs; a no-op when the cached binary already has the pinned version),
# then runs the check from the workspace root. It only reads `cargo metadata`:
# nothing of the workspace is built.
#
#   bash ci/cargo-deny.sh
#
# Advisories are not checked here: see the note at the top of deny.toml.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=0.20.2
root=${SHIPSHAPE_TOOLS_DIR:-$HOME/.cache/shipshape/tools}
deny=$root/bin/cargo-deny

if [ "$("$deny" --version 2>/dev/null)" != "cargo-deny $version" ]; then
    echo "==> installing cargo-deny $version into $root"
    # Its own target dir, kept for reuse. cargo-deny 0.20 has no cargo
    # features left to trim (--no-default-features would change nothing).
    # Its release profile is fat LTO with one codegen unit: a long serial
    # step on 2 cores for a tool whose run takes a second, so it is turned
    # off here (profile settings from the environment win over the crate's).
    CARGO_TARGET_DIR=$HOME/.cache/shipshape/tools-target \
    CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install cargo-deny --version "=$version" --locked --root "$root" --force
fi
"$deny" --version

# The cached binary is run directly (same as `cargo deny`), so no other
# cargo-deny on PATH can stand in for the pinned one. --all-features: optional
# dependencies could ship too (it adds nothing today). The inclusion graphs
# would print ~1,800 lines for the known duplicate-version warnings alone;
# run `cargo deny check bans` locally to see why a crate is in the graph.
"$deny" --all-features check --hide-inclusion-graph licenses bans sources
