# A local stand-in for gcr.io/distroless/cc-debian12:nonroot, for machines
# that reach no image registry (deploy/docker/base-images.sh builds it). The
# same contents, taken from Debian bookworm's own packages: glibc, libgcc,
# OpenSSL's libraries, CA certificates, time zones, /etc/services, and the
# users root (0) and nonroot (65532) with a home each; no shell, no package
# manager, no coreutils.

ARG DEBIAN_IMAGE=local/debian:bookworm
FROM ${DEBIAN_IMAGE} AS pick

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates tzdata netbase \
    && rm -rf /var/lib/apt/lists/*

# Every file of the library packages but their documentation, then the
# configuration distroless carries.
RUN set -eu; \
    # Debian's merged /usr: /lib64 (the dynamic loader's path) and the other
    # top-level folders are links into /usr, as in the Debian they come from.
    mkdir -p /out/usr/bin /out/usr/lib /out/usr/lib64 /out/usr/sbin; \
    for link in bin lib lib64 sbin; do ln -s "usr/$link" "/out/$link"; done; \
    for package in libc6 libgcc-s1 libssl3 tzdata netbase; do \
        dpkg -L "$package" | while read -r path; do \
            [ -d "$path" ] && continue; \
            case "$path" in /usr/share/doc/*|/usr/share/lintian/*|/usr/share/man/*) continue ;; esac; \
            cp -a --parents "$path" /out/; \
        done; \
    done; \
    mkdir -p /out/etc/ssl/certs /out/tmp /out/home/nonroot /out/root; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    chmod 1777 /out/tmp; \
    chown 65532:65532 /out/home/nonroot; \
    chmod 0700 /out/root; \
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >/out/etc/passwd; \
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >/out/etc/group; \
    printf '%s\n' 'hosts: files dns' >/out/etc/nsswitch.conf

FROM scratch
COPY --from=pick /out/ /
USER 65532:65532
WORKDIR /home/nonroot
