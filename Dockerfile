# The Shipshape image: all six processes in one image, one binary per
# service, the service chosen by the container's command, and the one-shot
# `shipshape-kafka-setup` that gives a secured broker the services' logins,
# topics and ACLs (docker-compose.yml's kafka-setup, the chart's setup Job):
#
#   docker build -t shipshape:0.1.0 .
#   docker run --rm -p 8090:8090 shipshape:0.1.0 /usr/local/bin/shipshape-psp-simulator
#
# Why one image and not one per service: the six binaries come out of one
# `cargo build` of one workspace and share almost all of their code (tokio,
# tonic, sqlx, rdkafka, the shared crates), so one build, one tag to pin, scan
# and sign, and one pull per node serve every service; a release can never mix
# services built from different commits. Per-service images would each save
# the other binaries (roughly 50 MB uncompressed, 18 MB compressed) at the
# price of six artifacts that must move in lock-step.
#
# Runtime base: gcr.io/distroless/cc-debian12:nonroot, which holds glibc,
# libgcc, OpenSSL's libraries (libssl3) and CA certificates and nothing else:
# no shell, no package manager, no curl. The binaries link glibc, libgcc_s,
# zlib and OpenSSL dynamically (through rdkafka's `libz` and `ssl` features:
# SCRAM logins and TLS to the broker), so this stage adds libz.so.1 from the
# build stage (same Debian release, same glibc) and refuses to finish if a
# binary needs any other library. The build stage is Debian bookworm to match
# debian12's glibc and OpenSSL 3.
#
# Health checks without a shell: `shipshape-healthcheck` is a 150-line Rust
# program (deploy/healthcheck/main.rs, the standard library and clap, built
# here with the services) that GETs /readyz on the ops port and exits 0 on
# 200. It serves this image's HEALTHCHECK and Compose's healthchecks.
# Kubernetes ignores HEALTHCHECK and probes over HTTP itself.
# The alternatives were worse: a curl/busybox runtime brings a shell and
# tools into every container, and a distroless image without any probe leaves
# Compose unable to order start-up by health.
#
# Dependency caching: BuildKit cache mounts keep the cargo registry and the
# target directory between builds, so after the first build only the
# workspace's own crates recompile. (A builder without those caches, such as
# a fresh CI runner, does a full release build of the workspace.)
#
# Platforms: linux/amd64 and linux/arm64. The build stage runs on the target
# platform itself (no cross toolchain; the bundled librdkafka's configure
# script cross-compiles poorly), so with buildx:
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/shipshape:0.1.0 --push .
#
# builds arm64 natively on an arm64 node, or under QEMU on an amd64 host
# (correct, but several times slower). Nothing in this file names an
# architecture: library paths come from `gcc -dumpmachine`.
#
# Release binaries keep their symbols (readable backtraces) but drop debug
# info: `--build-arg CARGO_PROFILE_RELEASE_STRIP=none` keeps the line tables
# the workspace's release profile asks for (about 240 MB more in all).

# Base images: today's published ones by default. Where no registry can be
# reached, deploy/docker/base-images.sh makes local equivalents from Debian
# bookworm (a builder with the same Rust, a runtime with the same libraries
# and user as distroless) and the build names them:
#
#   docker build --build-arg BUILD_IMAGE=local/rust:1.95-bookworm \
#     --build-arg RUNTIME_IMAGE=local/distroless-cc:nonroot -t shipshape:dev .
ARG RUST_VERSION=1.95
ARG BUILD_IMAGE=rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# checkov:skip=CKV_DOCKER_7: pinned through BUILD_IMAGE's default above (rust:1.95-bookworm), which checkov does not read
FROM ${BUILD_IMAGE} AS build

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A C compiler, make, and zlib's and OpenSSL's headers for the bundled
# librdkafka, which openssl-sys finds with pkg-config (gcc and make come with
# the rust image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends zlib1g-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# Build arguments are visible to RUN as environment variables: cargo reads
# this one as the release profile's `strip` setting.
ARG CARGO_PROFILE_RELEASE_STRIP=debuginfo
ARG TARGETARCH
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

RUN --mount=type=cache,id=shipshape-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=shipshape-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=shipshape-target-${TARGETARCH},target=/src/target,sharing=locked \
    cargo build --release --locked \
        --package shipshape-gateway \
        --package shipshape-order \
        --package shipshape-inventory \
        --package shipshape-payment \
        --package shipshape-shipping \
        --package shipshape-psp-simulator \
        --package shipshape-healthcheck \
        --package shipshape-kafka \
    && mkdir -p /out/usr/local/bin \
    && for binary in gateway order inventory payment shipping psp-simulator healthcheck kafka-setup; do \
        cp "target/release/shipshape-$binary" /out/usr/local/bin/; \
    done

# zlib for the runtime image, and a guard: every binary must need nothing
# beyond what distroless/cc provides (glibc, libgcc_s, libssl3's libssl and
# libcrypto) plus that zlib.
RUN set -eu; \
    triple="$(gcc -dumpmachine)"; \
    mkdir -p "/out/usr/lib/$triple"; \
    cp -L "/usr/lib/$triple/libz.so.1" "/out/usr/lib/$triple/libz.so.1"; \
    allowed='^(linux-vdso\.so\.1|linux-gate\.so\.1|/lib(64)?/ld-linux[-a-z0-9_.]*\.so\.[0-9]+|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libssl\.so\.3|libcrypto\.so\.3|libz\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1)$'; \
    for binary in /out/usr/local/bin/*; do \
        extra="$(ldd "$binary" | awk '{print $1}' | grep -Ev "$allowed" || true)"; \
        if [ -n "$extra" ]; then \
            echo "$binary needs libraries the runtime image lacks: $extra" >&2; \
            exit 1; \
        fi; \
    done

FROM ${RUNTIME_IMAGE} AS runtime

LABEL org.opencontainers.image.title="shipshape" \
      org.opencontainers.image.description="Shipshape services: gateway, order, inventory, payment, shipping, the PSP simulator and the Kafka setup; pick one with the container command" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/ /

# distroless' nonroot user; repeated numerically so that Kubernetes'
# runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532

# gateway HTTP, PSP simulator HTTP, gRPC (order, inventory), ops servers.
EXPOSE 8080 8090 50051 50052 9100 9101 9102 9103 9104 9105

ENV LOG_FORMAT=json

# Probes /readyz on the ops port of the service running as PID 1 (or the
# port of OPS_ADDR). start-period covers migrations and the wait for the
# broker's topics. (shipshape-kafka-setup serves no ops port: it runs once
# and exits, and its containers disable this check.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/shipshape-healthcheck"]

# Every deployment names its service; without one, the gateway starts.
CMD ["/usr/local/bin/shipshape-gateway"]
