# A local stand-in for the published rust:<version>-bookworm image, for
# machines that reach no image registry (deploy/docker/base-images.sh builds
# it): Debian bookworm, the C toolchain and headers a Rust build of this
# workspace needs, and the Rust toolchain copied from the machine that builds
# it (the context's toolchain/ folder: rustc, cargo, the standard library),
# at the same paths and environment as the published image.
#
# certificates/ holds the certificate authorities the machine itself trusts
# beyond Debian's (an egress proxy's, say), so that cargo inside the build
# reaches the registry as cargo outside it does. It may be empty.

ARG DEBIAN_IMAGE=local/debian:bookworm
FROM ${DEBIAN_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# What the published image brings from buildpack-deps that this workspace's
# build uses: a C and C++ compiler and make (the bundled librdkafka), and
# pkg-config; the Dockerfile adds the headers it needs itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc g++ libc6-dev make pkg-config \
    && rm -rf /var/lib/apt/lists/*

COPY certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates

COPY toolchain/ /usr/local/rust/

ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

RUN mkdir -p "$CARGO_HOME/bin" && rustc --version && cargo --version
