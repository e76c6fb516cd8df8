#!/usr/bin/env bash
# Every image the Compose stack needs, built on a machine that reaches no
# image registry: starts the Docker engine if needed (engine.sh), makes the
# local base images (base-images.sh), builds the Shipshape image from the
# project's Dockerfile on them, unchanged but for its two base-image build
# arguments, then the stand-ins for the third-party images (standins.sh).
# Prints each step's time and the images' sizes. Then:
#
#   docker-compose -f docker-compose.yml -f deploy/docker/compose.standins.yml up -d
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=deploy/docker/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tag=${SHIPSHAPE_IMAGE:-shipshape:dev}
rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' "$repo/Dockerfile")

bash "$repo/deploy/docker/engine.sh"
bash "$repo/deploy/docker/base-images.sh"

started=$SECONDS
log=$cache/build-$(echo "$tag" | tr ':/' '--').log
echo "images: building $tag (log: $log)"
if ! DOCKER_BUILDKIT=1 "$docker" build --progress=plain \
    --build-arg BUILD_IMAGE="local/rust:$rust_version-bookworm" \
    --build-arg RUNTIME_IMAGE=local/distroless-cc:nonroot \
    -t "$tag" "$repo" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "images: building $tag failed; the whole log: $log" >&2
    exit 1
fi
took "$tag" "$started"

bash "$repo/deploy/docker/standins.sh"

"$docker" image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' |
    grep -E "^(${tag%%:*}|local/)" | sort | sed 's/^/images: size: /'
