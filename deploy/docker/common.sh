# shellcheck shell=bash
# Sourced by the scripts beside it: which Docker CLI they use, where they
# keep what they cache, and how they build and report.
#
# Debian's CLI, /usr/bin/docker (DOCKER overrides it): a newer CLI earlier on
# the PATH may refuse BuildKit builds without the buildx plugin, which
# Debian's 20.10 CLI does not need.
docker=${DOCKER:-/usr/bin/docker}
cache=${SHIPSHAPE_DOCKER_CACHE:-$HOME/.cache/shipshape/docker}
mkdir -p "$cache"

# took LABEL STARTED: how long since STARTED (a $SECONDS), under the name of
# the script that sourced this.
took() { echo "$(basename "$0" .sh): $1: $((SECONDS - $2)) s"; }

# build_image TAG CONTEXT [DOCKERFILE]: a BuildKit build that prints nothing
# but its errors (DOCKERFILE defaults to the context's own).
build_image() {
    DOCKER_BUILDKIT=1 "$docker" build -q -f "${3:-$2/Dockerfile}" -t "$1" "$2" >/dev/null
}
