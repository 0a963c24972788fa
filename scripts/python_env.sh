#!/usr/bin/env bash
# The project's virtual environment at .venv: the project installed editable with its dev
# extras, and the gRPC transport (scripts/grpc_front.sh). Re-installs only when pyproject.toml changed. Idempotent.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/.venv"
stamp="$venv/.pyproject.sha256"
log() { printf '[setup:python] %s\n' "$*" >&2; }

want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exec bash "$here/scripts/grpc_front.sh"  # the gRPC transport: rebuilt when its sources change
fi
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
log "installing the project and its dependencies into .venv (first time: about 2 minutes)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[dev]"
echo "$want" > "$stamp"
bash "$here/scripts/grpc_front.sh"
