#!/usr/bin/env bash
# Builds the local stand-ins for the third-party images docker-compose.yml
# runs, for machines that reach no image registry, and which the override
# deploy/docker/compose.standins.yml puts in their place:
#
#   local/kafka:<KAFKA>           apache/kafka       (the jars of deploy/kafka/pom.xml)
#   local/postgres:15-bookworm    postgres           (Debian's PostgreSQL)
#   local/prometheus:bookworm     prom/prometheus    (Debian's Prometheus)
#   local/jaeger:<JAEGER>         jaegertracing/jaeger (built from its Go module)
#
# Grafana has none: its source is under the AGPL, which this project does
# not take in, and no build of it is on the registries these machines reach.
#
# Needs local/debian:bookworm (deploy/docker/base-images.sh), Maven and Go.
# Each image is built every time, from Docker's layer cache when nothing
# changed (seconds); Maven's jars and the Jaeger binary, which depend on
# versions only, are cached in ~/.cache/shipshape/docker.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$repo/deploy/docker/standins
# shellcheck source=deploy/docker/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
pom_property() {
    sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$repo/deploy/kafka/pom.xml" | head -n 1
}

context=$(mktemp -d "${TMPDIR:-/tmp}/shipshape-standins.XXXXXX")
trap 'rm -rf "$context"' EXIT

kafka_version=$(pom_property kafka.version)
log4j_version=$(pom_property log4j.version)
started=$SECONDS
jars=$cache/kafka-image-$kafka_version/libs
if [ ! -d "$jars" ]; then
    rm -rf "$jars.partial"
    mvn -q -B -f "$here/kafka/pom.xml" -Dkafka.version="$kafka_version" \
        -Dlog4j.version="$log4j_version" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$jars.partial"
    mv "$jars.partial" "$jars"
fi
cp -a "$here/kafka" "$context/kafka"
rm -f "$context/kafka/pom.xml"
cp -a "$jars" "$context/kafka/libs"
build_image "local/kafka:$kafka_version" "$context/kafka"
took "local/kafka:$kafka_version" "$started"

started=$SECONDS
build_image local/postgres:15-bookworm "$here/postgres"
took local/postgres:15-bookworm "$started"

started=$SECONDS
build_image local/prometheus:bookworm "$here/prometheus"
took local/prometheus:bookworm "$started"

jaeger_version=$(sed -n 's:^\s*github.com/jaegertracing/jaeger \(v[0-9.]*\).*:\1:p' "$here/jaeger/go.mod" | head -n 1)
started=$SECONDS
binary=$cache/jaeger-$jaeger_version/jaeger
if [ ! -x "$binary" ]; then
    mkdir -p "$(dirname "$binary")"
    (cd "$here/jaeger" && CGO_ENABLED=0 go build -trimpath -o "$binary.partial" \
        github.com/jaegertracing/jaeger/cmd/jaeger)
    mv "$binary.partial" "$binary"
fi
mkdir -p "$context/jaeger"
cp "$here/jaeger/Dockerfile" "$context/jaeger/"
cp "$binary" "$context/jaeger/jaeger"
build_image "local/jaeger:$jaeger_version" "$context/jaeger"
took "local/jaeger:$jaeger_version" "$started"
