#!/usr/bin/env bash
# Build the Kubernetes target's tools into .tools/bin, pinned and cached: the pulumi-kubernetes provider
# plugin, the control plane (tools/kubernetes), etcd (tools/etcd), kwok (tools/kwok), cri-dockerd, a
# pause image and Debian's registry and CNI plugins. Only the Kubernetes tests and `make k8s-demo` call
# this; `make demo` never does. Idempotent: a step whose stamp matches its pinned version is skipped.
#
#   scripts/k8s_tools.sh [all|control-plane|etcd|kwok|provider|cri-dockerd|pause|debian] ...
#
# Every step takes its own lock, so two callers (a test session and `make k8s-demo`) never build twice.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
tools="$here/.tools"
bin="$tools/bin"
work="$tools/build"
mkdir -p "$bin" "$work" "$tools/locks"
log() { printf '[k8s-tools:%s] %s\n' "$step" "$*" >&2; }

PROVIDER_VERSION=4.25.0
PROVIDER_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4
PROVIDER_PSEUDO=v4.0.0-20260115033456-f47bc2d6f199   # the only version the module proxy serves: 4.25.0's tree
CRI_DOCKERD_VERSION=v0.3.17
KWOK_VERSION=v0.8.0

stamped() { [[ -f "$bin/.$1-version" && "$(cat "$bin/.$1-version")" == "$2" ]]; }
stamp() { echo "$2" > "$bin/.$1-version"; }
gomod_version() { awk -v m="$2" '$1==m || $2==m {print ($1==m ? $2 : $3); exit}' "$here/tools/$1/go.mod"; }
need_go() { command -v go >/dev/null 2>&1 || { log "Go 1.26+ is needed to build the Kubernetes tools"; exit 1; }; }
timed() { local t0=$SECONDS; "$@"; log "done in $((SECONDS - t0)) s"; }

control_plane() {
  local v; v="$(gomod_version kubernetes k8s.io/kubernetes)"
  local cmds="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
  stamped control-plane "$v $cmds" && return 0
  need_go
  log "building $cmds $v (first time: about 25 minutes)"
  local major minor ld=""
  major="${v#v}"; major="${major%%.*}"; minor="${v#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$here/tools/kubernetes" && go build -trimpath -ldflags "-s -w$ld" -o "$bin/" \
    $(printf 'k8s.io/kubernetes/cmd/%s ' $cmds))
  stamp control-plane "$v $cmds"
}

etcd() {
  local v; v="$(gomod_version etcd go.etcd.io/etcd/server/v3)"
  stamped etcd "$v" && return 0
  need_go
  log "building etcd $v (first time: a few minutes)"
  (cd "$here/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
  stamp etcd "$v"
}

kwok() {
  local v; v="$(gomod_version kwok sigs.k8s.io/kwok)"
  stamped kwok "$v" && return 0
  need_go
  log "building kwok $v (first time: about 3 minutes)"
  (cd "$here/tools/kwok" && go build -trimpath -ldflags "-s -w" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
  # kwok needs stage files (how fake nodes and pods move through their lifecycle); they ship in its module.
  local src; src="$(cd "$here/tools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  mkdir -p "$tools/kwok"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml pod/fast/pod-ready.yaml \
           pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$src/kustomize/stage/$f"; echo "---"
  done > "$tools/kwok/stages.yaml"
  stamp kwok "$v"
}

provider() {
  stamped provider "$PROVIDER_VERSION" && return 0
  need_go
  log "building pulumi-resource-kubernetes $PROVIDER_VERSION (first time: about 35 minutes)"
  # The provider's go.mod replaces its SDK with ../sdk and its module zip lacks two generated embed
  # files: copy provider and SDK side by side, generate the embeds with the module's own generate.go.
  go mod download "$PROVIDER_MODULE@$PROVIDER_PSEUDO" "github.com/pulumi/pulumi-kubernetes/sdk/v4@v$PROVIDER_VERSION"
  local cache src="$work/pulumi-kubernetes"
  cache="$(go env GOMODCACHE)/github.com/pulumi/pulumi-kubernetes"
  rm -rf "$src"; mkdir -p "$src"
  cp -r "$cache/provider/v4@$PROVIDER_PSEUDO" "$src/provider"
  cp -r "$cache/sdk/v4@v$PROVIDER_VERSION" "$src/sdk"
  chmod -R u+w "$src"
  (cd "$src/provider/cmd/pulumi-resource-kubernetes" && VERSION="$PROVIDER_VERSION" go run ./generate.go)
  (cd "$src/provider" && go build -trimpath \
    -ldflags "-s -w -X $PROVIDER_MODULE/pkg/version.Version=$PROVIDER_VERSION" \
    -o "$work/pulumi-resource-kubernetes" ./cmd/pulumi-resource-kubernetes)
  mkdir -p "$tools/plugins"
  mv "$work/pulumi-resource-kubernetes" "$tools/plugins/pulumi-resource-kubernetes"
  rm -rf "$src"
  stamp provider "$PROVIDER_VERSION"
}

# The plugin goes into PULUMI_HOME's plugin cache (found there without a warning, unlike on PATH).
install_provider() {
  local pulumi="$bin/pulumi"
  [[ -x "$pulumi" ]] || pulumi="$(command -v pulumi)"
  export PULUMI_HOME="${PULUMI_HOME:-$tools/pulumi-home}"
  [[ -x "$PULUMI_HOME/plugins/resource-kubernetes-v$PROVIDER_VERSION/pulumi-resource-kubernetes" ]] && return 0
  "$pulumi" plugin install resource kubernetes "$PROVIDER_VERSION" --file "$tools/plugins/pulumi-resource-kubernetes" >&2
}

cri_dockerd() {
  stamped cri-dockerd "$CRI_DOCKERD_VERSION-oom0-http" && return 0
  need_go
  log "building cri-dockerd $CRI_DOCKERD_VERSION (first time: about 5 minutes)"
  go mod download "github.com/Mirantis/cri-dockerd@$CRI_DOCKERD_VERSION"
  local src="$work/cri-dockerd"
  rm -rf "$src"
  cp -r "$(go env GOMODCACHE)/github.com/!mirantis/cri-dockerd@$CRI_DOCKERD_VERSION" "$src"
  chmod -R u+w "$src"
  rm -rf "$src/vendor"   # incomplete in the module zip; build against the module graph instead
  # This host lacks CAP_SYS_RESOURCE, so a negative oom_score_adj makes runc fail: the sandbox gets 0
  # instead of -998, and a container's negative value (the kubelet gives Guaranteed pods -997) becomes 0.
  bash "$here/scripts/k8s_cri_dockerd_oom.sh" "$src"
  bash "$here/scripts/k8s_cri_dockerd_streaming.sh" "$src"   # exec through the API (the canary proxy's routing)
  (cd "$src" && go build -mod=mod -trimpath -ldflags "-s -w" -o "$bin/cri-dockerd" .)
  rm -rf "$src"
  stamp cri-dockerd "$CRI_DOCKERD_VERSION-oom0-http"
}

# A pause image built here: a static C program that sleeps until signalled and reaps children.
pause() {
  local tag="modelstack-pause:1"
  stamped pause "$tag" && docker image inspect "$tag" >/dev/null 2>&1 && return 0
  command -v gcc >/dev/null 2>&1 || apt_install gcc libc6-dev
  local dir="$work/pause"; rm -rf "$dir"; mkdir -p "$dir/root"
  gcc -static -O2 -o "$dir/root/pause" "$here/tools/kubernetes/pause.c"
  strip "$dir/root/pause"
  tar -C "$dir/root" -c pause | docker import -c 'ENTRYPOINT ["/pause"]' - "$tag" >/dev/null
  rm -rf "$dir"
  stamp pause "$tag"
}

apt_install() {
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2; }
}

# Debian's CNCF distribution registry (run by the tests with its own config, not as a service), the
# CNI plugins (bridge, host-local, portmap, loopback) and openssl for the cluster's certificates.
debian() {
  local missing=()
  [[ -x /usr/bin/docker-registry ]] || missing+=(docker-registry)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  ((${#missing[@]} == 0)) && return 0
  apt_install "${missing[@]}"
  # The package starts a registry service on :5000; the tests run their own on a free port.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
}

run_step() {
  step="$1"
  local fn="${1//-/_}"
  exec {lock}>"$tools/locks/$step.lock"
  flock "$lock"
  timed "$fn"
  exec {lock}>&-
}

steps=("$@")
((${#steps[@]})) || steps=(all)
for s in "${steps[@]}"; do
  case "$s" in
    all) for t in debian etcd kwok control-plane cri-dockerd pause provider; do run_step "$t"; done
         step=provider; install_provider ;;
    provider) run_step provider; install_provider ;;
    control-plane|etcd|kwok|cri-dockerd|pause|debian) run_step "$s" ;;
    *) echo "unknown step: $s" >&2; exit 2 ;;
  esac
done
