#!/usr/bin/env bash
# Everything modelstack needs on a fresh machine, each step idempotent and quick when done:
# Python env, Docker Engine, Pulumi CLI and plugins, the serving wheelhouse, the base image.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
start=$(date +%s)
for step in python_env docker_engine pulumi_cli pulumi_plugins wheelhouse base_image; do
  t0=$(date +%s)
  bash "$here/$step.sh"
  t1=$(date +%s)
  if (( t1 - t0 > 2 )); then printf '[setup] %s took %d s\n' "$step" $((t1 - t0)) >&2; fi
done
printf '[setup] ready (%d s)\n' $(( $(date +%s) - start )) >&2
