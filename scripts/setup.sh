#!/usr/bin/env bash
# Everything modelstack needs on a fresh machine, each step idempotent and quick when done:
# Python env, Docker Engine, Pulumi CLI and plugins, the serving wheelhouse (with the gRPC transport
# built from native/grpc_front, and the llama.cpp runtime), the base image, the speech tools and
# Whisper tiny.en (asr_setup).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
timed() {
  local t0=$SECONDS
  "$@"
  if (( SECONDS - t0 > 2 )); then printf '[setup] %s took %d s\n' "$*" $((SECONDS - t0)) >&2; fi
}
for step in python_env docker_engine pulumi_cli pulumi_plugins wheelhouse grpc_front llama_runtime asr_setup; do
  timed bash "$here/$step.sh"
done
# Base images, built from Debian packages: the serving image's and the proxy's.
timed bash "$here/debian_image.sh" modelstack-base:bookworm-py311 python3,python3-venv,ca-certificates
timed bash "$here/debian_image.sh" modelstack-proxy:bookworm-nginx nginx-light
printf '[setup] ready (%d s)\n' "$SECONDS" >&2
