#!/usr/bin/env bash
# Give cri-dockerd's streaming URLs their scheme in a copy of its source. v0.3.17 serves exec, attach and
# port-forward over plain HTTP but answers the kubelet with a URL without a scheme ("//127.0.0.1:N/cri/exec/…"),
# which the kubelet dials as HTTPS: `kubectl exec` (and every exec through the API) fails with "http: server
# gave HTTP response to HTTPS client". Fails loudly if the source no longer has the line it edits.
set -euo pipefail
src="$1"
sed -i 's|BaseURL:                         &url.URL{Path: "/cri/"},|BaseURL:                         \&url.URL{Scheme: "http", Path: "/cri/"},|' \
  "$src/cmd/server.go"
grep -qF 'url.URL{Scheme: "http", Path: "/cri/"}' "$src/cmd/server.go" \
  || { echo "cri-dockerd source changed: cmd/server.go has no streaming BaseURL with a scheme after the edit" >&2; exit 1; }
