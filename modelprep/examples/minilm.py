"""The MiniLM sentence-embedding example: the packaged all-MiniLM-L6-v2 folder and held-out tweets as its texts.

    python -m modelprep.examples.minilm stacks/minilm

links model/ to the installed MiniLM folder (scripts/nlp_assets.sh installs it) and writes
data/calibration.txt and data/evaluation.txt (1,000 held-out tweets, read from the installed
package at run time and never committed).
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelprep.transformers.assets import minilm_dir, split, tweets

EVALUATION_TEXTS = 1000
CALIBRATION_TEXTS = 200


def write_texts(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(t.split()) + "\n" for t in texts), encoding="utf-8")


def link_model(out: Path, source: Path) -> Path:
    target = out / "model"
    if target.is_symlink() or target.exists():
        if target.resolve() == source.resolve():
            return target
        target.unlink() if target.is_symlink() else None
    out.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source, target_is_directory=True)
    return target


def main(out_dir: str) -> None:
    out = Path(out_dir)
    link_model(out, minilm_dir())
    train, test = split(tweets(), EVALUATION_TEXTS)
    write_texts(out / "data" / "evaluation.txt", [t for t, _ in test])
    write_texts(out / "data" / "calibration.txt", [t for t, _ in train[:CALIBRATION_TEXTS]])
    print(f"{out}/model → {minilm_dir()}; {EVALUATION_TEXTS} held-out tweets in data/evaluation.txt")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "stacks/minilm")
