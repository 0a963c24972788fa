#!/usr/bin/env bash
# Download the serving image's Python packages once, on the host, for the image's Python
# (Debian bookworm: CPython 3.11, glibc 2.36), so `docker build` needs no network.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
# One wheelhouse for every serving image: LiteRT (requirements.txt), ONNX Runtime (-onnx), text (-text),
# speech (-speech: faster-whisper, CTranslate2, PyAV), llama.cpp (-llm).
reqs=("$here/serving/requirements.txt" "$here/serving/requirements-onnx.txt" "$here/serving/requirements-text.txt"
      "$here/serving/requirements-speech.txt" "$here/serving/requirements-llm.txt")
dest="${MODELSTACK_WHEELHOUSE:-$here/.cache/wheelhouse}"
stamp="$dest/.requirements.sha256"
log() { printf '[setup:wheelhouse] %s\n' "$*" >&2; }

want="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

# pip picks the newest release whose platform tag it is told to accept, so list every
# manylinux tag up to bookworm's glibc; otherwise it silently falls back to old releases.
platforms=(--platform manylinux2014_x86_64 --platform linux_x86_64)
for n in $(seq 17 36); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done

# Additive: a requirements file added or changed downloads what is missing (pip skips the wheels
# already here), and the wheels built on this machine (the gRPC transport, llama.cpp) stay; a
# wheel no requirements file pins any more is removed after the download.
mkdir -p "$dest"
log "downloading the pinned serving packages for CPython 3.11 / glibc 2.36"
for req in "${reqs[@]}"; do
  # modelstack-grpc and llama-cpp-python are built here, not downloaded (scripts/grpc_front.sh and
  # scripts/llama_runtime.sh add them after this).
  grep -v -e '^modelstack-grpc==' -e '^llama-cpp-python==' "$req" > "$dest/.requirements.txt"
  python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    "${platforms[@]}" --no-deps -r "$dest/.requirements.txt" -d "$dest"
done
rm -f "$dest/.requirements.txt"
pinned="$(cat "${reqs[@]}" | grep -E '^[A-Za-z0-9._-]+==' | sed -E 's/==/-/; s/[-_.]+/_/g' | tr 'A-Z' 'a-z' | sort -u)"
for wheel in "$dest"/*.whl; do
  name="$(basename "$wheel" | cut -d- -f1-2 | sed -E 's/[-_.]+/_/g' | tr 'A-Z' 'a-z')"
  grep -qxF "$name" <<<"$pinned" || { log "removing $(basename "$wheel") (no longer pinned)"; rm -f "$wheel"; }
done
echo "$want" > "$stamp"
log "$(ls "$dest"/*.whl | wc -l) wheels in $dest"
