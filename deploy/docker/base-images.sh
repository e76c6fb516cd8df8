#!/usr/bin/env bash
# Makes, on a machine that reaches no image registry, the local base images
# that the project's images build from instead of published ones:
#
#   local/debian:bookworm         Debian bookworm, minimal (debootstrap)
#   local/rust:<RUST>-bookworm    stands in for rust:<RUST>-bookworm
#   local/distroless-cc:nonroot   stands in for gcr.io/distroless/cc-debian12:nonroot
#
# <RUST> is the Dockerfile's RUST_VERSION; the builder gets the toolchain of
# this machine's rustc, which must be that version. The first two, once
# made, are kept (--rebuild makes them again): they depend on the Debian
# release and the Rust version their names carry. Needs root (debootstrap) and a
# running Docker engine (deploy/docker/engine.sh). Prints what it did and how
# long each took.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=deploy/docker/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rebuild=false
[ "${1:-}" = --rebuild ] && rebuild=true

rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' "$repo/Dockerfile")
[ -n "$rust_version" ] || { echo "base-images: no RUST_VERSION in the Dockerfile" >&2; exit 1; }

have() { [ "$rebuild" = false ] && "$docker" image inspect "$1" >/dev/null 2>&1; }

if ! have local/debian:bookworm; then
    started=$SECONDS
    command -v debootstrap >/dev/null || {
        echo "base-images: debootstrap is missing (apt-get install debootstrap)" >&2
        exit 1
    }
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/shipshape-rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" >"$cache/debootstrap.log" 2>&1 || {
        echo "base-images: debootstrap failed; its log: $cache/debootstrap.log" >&2
        exit 1
    }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$docker" import - local/debian:bookworm >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    took local/debian:bookworm "$started"
fi

if ! have "local/rust:$rust_version-bookworm"; then
    started=$SECONDS
    sysroot=$(rustc --print sysroot)
    have_version=$(rustc --version | awk '{print $2}')
    case "$have_version" in
        "$rust_version" | "$rust_version".*) ;;
        *)
            echo "base-images: this machine's rustc is $have_version; the Dockerfile wants $rust_version" >&2
            exit 1
            ;;
    esac
    context=$(mktemp -d "${TMPDIR:-/tmp}/shipshape-builder.XXXXXX")
    trap 'rm -rf "$context"' EXIT
    mkdir -p "$context/toolchain/bin" "$context/toolchain/lib/rustlib" "$context/certificates"
    cp -a "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$sysroot/bin/rustdoc" "$context/toolchain/bin/"
    cp -a "$sysroot"/lib/*.so* "$context/toolchain/lib/"
    cp -a "$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')" "$context/toolchain/lib/rustlib/"
    [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$context/toolchain/"
    # The authorities this machine trusts beyond Debian's own.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$context/certificates/"
    fi
    build_image "local/rust:$rust_version-bookworm" "$context" "$repo/deploy/docker/builder.Dockerfile"
    rm -rf "$context"
    trap - EXIT
    took "local/rust:$rust_version-bookworm (rustc $have_version)" "$started"
fi

# Built every time, from the layer cache when nothing changed.
started=$SECONDS
build_image local/distroless-cc:nonroot "$repo/deploy/docker" "$repo/deploy/docker/runtime.Dockerfile"
took local/distroless-cc:nonroot "$started"
