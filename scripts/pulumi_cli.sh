#!/usr/bin/env bash
# Put a Pulumi CLI in .tools/bin. An existing `pulumi` on PATH (e.g. the official CLI) wins;
# otherwise build it from Go modules at the version pinned in tools/pulumi/go.mod
# (no download site is reachable here, only the Go module proxy). Idempotent.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$here/.tools/bin"
log() { printf '[setup:pulumi] %s\n' "$*" >&2; }

version="$(awk '/github.com\/pulumi\/pulumi\/pkg\/v3 /{print $NF; exit}' "$here/tools/pulumi/go.mod")"
stamp="$bin/.pulumi-version"
if [[ -x "$bin/pulumi" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
  exit 0
fi
if [[ ! -x "$bin/pulumi" ]] && command -v pulumi >/dev/null 2>&1; then
  log "using $(command -v pulumi) ($(pulumi version))"
  exit 0
fi
command -v go >/dev/null 2>&1 || { log "Go is needed to build the Pulumi CLI; install Go 1.26+"; exit 1; }

mkdir -p "$bin"
log "building the Pulumi CLI $version from Go modules (first time: about 5 minutes)"
(cd "$here/tools/pulumi" && go build -trimpath \
  -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version" \
  -o "$bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
echo "$version" > "$stamp"
log "built $("$bin/pulumi" version)"
