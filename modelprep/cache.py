"""A content-addressed store of prep results: one directory per key, written atomically.

An entry is built in a temporary sibling directory and renamed into place, so an interrupted
prep never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# The layout of an entry, the same for every family. A result (keyed by modelprep.request.prep_key):
REPORT = "report.json"
CHART = "report.png"
OUTPUTS = "outputs.npy"  # the evaluation outputs the chosen (or a candidate) variant gave, float32
# A measured variant (variant_key) or the baselines (baseline_key):
CANDIDATE_FILE = "candidate.bin"  # a variant's bytes in its own entry: measured, not (yet) deployable
MEASURES = "measures.json"  # a list of Measure rows


def default_root() -> Path:
    return Path(os.environ.get("MODELSTACK_CACHE") or Path.home() / ".cache" / "modelstack")


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_root()) / "prep"

    def entry(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> Path | None:
        path = self.entry(key)
        return path if (path / "COMPLETE").is_file() else None

    def put(self, key: str, files: dict[str, bytes]) -> Path:
        """Write `files` as the entry for `key`; the last step is one atomic rename."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=self.root))
        try:
            for name, content in files.items():  # a name with slashes is a file in a folder (a folder artifact)
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(content)
            (staging / "COMPLETE").write_text(key + "\n")
            final = self.entry(key)
            if final.exists():  # an old half-entry from before atomic writes, or a racing run
                shutil.rmtree(final)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final
