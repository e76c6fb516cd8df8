#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine: installs Debian's
# Docker (docker.io: dockerd and its own docker CLI), docker-compose and
# debootstrap when missing, and starts dockerd (overlay2) in the background
# when none runs, its log in ~/.cache/shipshape/docker/dockerd.log. Needs
# root. Prints the engine's version.
set -euo pipefail

# shellcheck source=deploy/docker/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
[ -x "$docker" ] || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "engine: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$docker" info >/dev/null 2>&1; then
    echo "engine: starting dockerd (log: $cache/dockerd.log)"
    setsid nohup dockerd --storage-driver overlay2 >>"$cache/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 60); do
        "$docker" info >/dev/null 2>&1 && break
        sleep 0.5
    done
fi
"$docker" version --format 'engine: Docker {{.Server.Version}}' || {
    echo "engine: dockerd does not answer; its log: $cache/dockerd.log" >&2
    exit 1
}
