#!/usr/bin/env bash
# Clamp cri-dockerd's oom_score_adj values at 0 in a copy of its source (hosts without CAP_SYS_RESOURCE).
# Negative values make runc fail there ("can't get final child's PID from pipe"): the pod sandbox's
# fixed -998 becomes 0, and a container's negative value (the kubelet's -997 for Guaranteed pods)
# becomes 0. Fails loudly if the source no longer has the lines it edits.
set -euo pipefail
src="$1"
edit() {  # file, sed expression, the text the edit must leave behind
  sed -i "$2" "$src/$1"
  grep -qF "$3" "$src/$1" || { echo "cri-dockerd source changed: $1 has no '$3' after the edit" >&2; exit 1; }
}
edit core/sandbox_helpers.go 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' \
  'defaultSandboxOOMAdj int = 0'
edit core/helpers_linux.go \
  's/createConfig.HostConfig.OomScoreAdj = int(rOpts.OomScoreAdj)/createConfig.HostConfig.OomScoreAdj = max(0, int(rOpts.OomScoreAdj))/' \
  'OomScoreAdj = max(0, int(rOpts.OomScoreAdj))'
