#!/usr/bin/env bash
# Install the two Python plugins the Pulumi CLI looks for next to itself (or on PATH):
#   pulumi-language-python        -> python -m iac.pulumi_host.langhost      (our language host)
#   pulumi-resource-pulumi-python -> python -m pulumi.dynamic    (the SDK's dynamic provider server)
# each run through iac.pulumi_host.plugin_guard, which ends the plugin when the CLI is gone.
# Upstream ships both outside the pip package, and the language host cannot be built from Go
# modules, so we write small wrappers bound to this checkout's virtualenv. Idempotent.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${MODELSTACK_TOOLS_BIN:-$here/.tools/bin}"
python="${MODELSTACK_PYTHON:-$here/.venv/bin/python}"
log() { printf '[setup:pulumi-plugins] %s\n' "$*" >&2; }

if [[ ! -x "$python" ]]; then
  log "no Python at $python; create the virtualenv first (pip install -e .[dev])"
  exit 1
fi
"$python" -c 'import grpc, pulumi.dynamic, iac.pulumi_host.langhost' \
  || { log "$python cannot import grpc, pulumi and iac.pulumi_host.langhost"; exit 1; }

# write_wrapper NAME MODULE: replace the file atomically so a running CLI never sees half of it.
write_wrapper() {
  local target="$bin/$1" tmp
  tmp="$(mktemp "$bin/.$1.XXXXXX")"
  printf '#!/bin/sh\n# Written by scripts/pulumi_plugins.sh; do not edit.\nexec "%s" -u -m %s "$@"\n' \
    "$python" "$2" > "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$target"
}

mkdir -p "$bin"
# iac.pulumi_host.plugin_guard ends a plugin whose CLI was killed, instead of leaving it running.
write_wrapper pulumi-language-python "iac.pulumi_host.plugin_guard iac.pulumi_host.langhost"
write_wrapper pulumi-resource-pulumi-python "iac.pulumi_host.plugin_guard pulumi.dynamic"
log "wrote pulumi-language-python and pulumi-resource-pulumi-python in $bin"
