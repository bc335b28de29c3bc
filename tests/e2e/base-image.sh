#!/usr/bin/env bash
# The base image the e2e tier builds the example Bentos FROM, made here because no image registry is reachable:
#   1. a debootstrap'd Debian bookworm (minbase + python3, pip, ca-certificates), imported into podman;
#   2. one layer on top for TEST BUILDS ONLY: the host's CA bundle (package registries are reached through a
#      TLS-intercepting gateway on this kind of machine) named by SSL_CERT_FILE, PIP_CERT and REQUESTS_CA_BUNDLE,
#      and PIP_BREAK_SYSTEM_PACKAGES=1 (BentoML's Dockerfile runs the system `pip install uv`, which Debian's
#      PEP 668 marker refuses; the generated Dockerfile has no hook before its pip steps).
# Production keeps its own base: the bentofile's docker.base_image is only pointed here through
# RECONCILER_BENTO_BASE_IMAGE (reconciler/build/bento.py), which only the e2e tests set.
#
# Cached by content key outside the clone: the key hashes this script, the suite, the package list, the
# mirror and the CA bundle; the rootfs tarball lives in $CACHE (default /var/cache/model-gitops/base-image),
# the images in podman's store. A warm machine prints the image name in well under a second.
#   tests/e2e/base-image.sh            # prints the image name (localhost/model-gitops-e2e-base:<key>)
# Needs root, debootstrap and podman (runc + lowered ulimits through CONTAINERS_CONF: see containers.conf here).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE="${SUITE:-bookworm}"
PACKAGES="python3-minimal,python3-pip,python3-venv,ca-certificates"
MIRROR="${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
CA="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
CACHE="${CACHE:-/var/cache/model-gitops/base-image}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"
for tool in debootstrap podman; do
  command -v $tool >/dev/null || { echo "missing $tool (apt-get install debootstrap podman runc)" >&2; exit 1; }
done
[ -r "$CA" ] || { echo "no CA bundle at $CA (set HOST_CA_BUNDLE)" >&2; exit 1; }
os_key=$( { cat "$0"; echo "$SUITE $PACKAGES $MIRROR"; } | sha256sum | cut -c1-16)
key=$( { echo "$os_key"; cat "$CA"; } | sha256sum | cut -c1-16)
os_image="localhost/model-gitops-e2e-debian:$os_key"
image="localhost/model-gitops-e2e-base:$key"
if podman image exists "$image"; then echo "$image"; exit 0; fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9    # two builds at once (pytest workers, .ci/run's background build) wait here
if podman image exists "$image"; then echo "$image"; exit 0; fi
if ! podman image exists "$os_image"; then
  tarball="$CACHE/debian-$os_key.tar"
  if [ ! -s "$tarball" ]; then
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX"); trap 'rm -rf "$root"' EXIT
    echo "debootstrap $SUITE from $MIRROR (1-5 min, cached by key $os_key)" >&2
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"; trap - EXIT
  fi
  podman import --change 'CMD ["/bin/bash"]' "$tarball" "$os_image" >/dev/null
fi
ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
cp "$CA" "$ctx/host-ca.crt"
cat > "$ctx/Containerfile" <<DOCKERFILE
FROM $os_image
# TEST BUILDS ONLY (tests/e2e/base-image.sh): trust the host's TLS-intercepting gateway, let pip install into
# the system Python as BentoML's Dockerfile expects. Never a production base.
COPY host-ca.crt /usr/local/share/ca-certificates/host-ca.crt
ENV SSL_CERT_FILE=/usr/local/share/ca-certificates/host-ca.crt \\
    PIP_CERT=/usr/local/share/ca-certificates/host-ca.crt \\
    REQUESTS_CA_BUNDLE=/usr/local/share/ca-certificates/host-ca.crt \\
    PIP_BREAK_SYSTEM_PACKAGES=1
DOCKERFILE
podman build -q -t "$image" "$ctx" >/dev/null
echo "$image"
