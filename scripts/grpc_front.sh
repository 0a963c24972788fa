#!/usr/bin/env bash
# The V2 gRPC transport (native/grpc_front: tonic, as the Python module modelstack_grpc), built
# once with cargo + maturin into a wheel, installed into .venv and put in the serving
# wheelhouse, so the image installs it like any other package. Rebuilds only when its sources
# change (Cargo.lock pins every crate). Idempotent.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here/native/grpc_front"
out="$here/.cache/grpc-front"
venv="$here/.venv"
wheelhouse="${MODELSTACK_WHEELHOUSE:-$here/.cache/wheelhouse}"
log() { printf '[setup:grpc-front] %s\n' "$*" >&2; }

want="$(cat "$src/Cargo.toml" "$src/Cargo.lock" "$src/pyproject.toml" "$src"/src/*.rs | sha256sum | cut -d' ' -f1)"
wheel="$(ls "$out"/wheels/modelstack_grpc-*.whl 2>/dev/null | head -1 || true)"
if [[ -z "$wheel" || ! -f "$out/.sources.sha256" || "$(cat "$out/.sources.sha256")" != "$want" ]]; then
  if ! command -v cargo >/dev/null 2>&1; then
    log "cargo is not installed: install Rust (https://rustup.rs or Debian's cargo), then run make setup again"
    exit 1
  fi
  [[ -x "$venv/bin/maturin" ]] || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.7,<2"
  log "building the gRPC transport with cargo (first time: about 2 minutes)"
  rm -rf "$out/wheels"
  CARGO_TARGET_DIR="$out/target" "$venv/bin/maturin" build --quiet --release --locked \
    --compatibility linux -m "$src/Cargo.toml" -o "$out/wheels" >&2
  wheel="$(ls "$out"/wheels/modelstack_grpc-*.whl | head -1)"
  echo "$want" > "$out/.sources.sha256"
fi
if [[ "$(cat "$venv/.grpc-front.sha256" 2>/dev/null)" != "$want" ]]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel"
  echo "$want" > "$venv/.grpc-front.sha256"
fi
if [[ -d "$wheelhouse" ]]; then
  rm -f "$wheelhouse"/modelstack_grpc-*.whl
  cp "$wheel" "$wheelhouse/"
fi
