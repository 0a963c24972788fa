#!/usr/bin/env bash
# debian_image.sh IMAGE PACKAGES: build IMAGE from Debian packages when it does not exist yet.
#   scripts/debian_image.sh modelstack-base:bookworm-py311 python3,python3-venv,ca-certificates
#   scripts/debian_image.sh modelstack-proxy:bookworm-nginx nginx-light
# Nothing is pulled from a registry: debootstrap fetches .deb files from the apt mirror
# this machine already uses, and `docker import` turns the tree into an image.
set -euo pipefail

IMAGE="$1"
PACKAGES="$2"
SUITE=bookworm
log() { printf '[setup:%s] %s\n' "$IMAGE" "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq debootstrap >/dev/null
fi

# The first Debian mirror apt is configured with (deb822 or one-line format).
mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
  | grep -vE '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d /tmp/modelstack-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT
log "debootstrap $SUITE from $mirror (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" \
  "$SUITE" "$root" "$mirror" >/tmp/modelstack-debootstrap-$$.log 2>&1 \
  || { log "debootstrap failed; see /tmp/modelstack-debootstrap-$$.log"; exit 1; }

# Keep the image small and free of host-specific state.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
log "importing as $IMAGE"
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  - "$IMAGE" >/dev/null
log "built $IMAGE"
