"""The MiniLM sentence-embedding example: the packaged all-MiniLM-L6-v2 folder and held-out tweets as its texts.

    python -m modelprep.examples.minilm stacks/minilm

links model/'s files to the installed MiniLM folder's (scripts/nlp_assets.sh installs it) and writes
data/calibration.txt and data/evaluation.txt (1,000 held-out tweets, read from the installed
package at run time and never committed).
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelprep.families.huggingface.assets import minilm_dir, split, tweets

EVALUATION_TEXTS = 1000
CALIBRATION_TEXTS = 200


def write_texts(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(t.split()) + "\n" for t in texts), encoding="utf-8")


def link_tree(source: Path, target: Path, skip: tuple[str, ...] = ()) -> Path:
    """`target` as real folders whose files link to `source`'s (no copy of the weights; the folder is
    ignored by git like every stack's model/, and content hashes walk it like any folder)."""
    if target.is_symlink():  # an older layout: model/ itself a link
        target.unlink()
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        link = target / item.name
        if item.name in skip:
            continue
        if item.is_dir():
            link_tree(item, link)
        elif not (link.exists() or link.is_symlink()):
            link.symlink_to(item)
    return target


def main(out_dir: str) -> None:
    out = Path(out_dir)
    link_tree(minilm_dir(), out / "model")
    train, test = split(tweets(), EVALUATION_TEXTS)
    write_texts(out / "data" / "evaluation.txt", [t for t, _ in test])
    write_texts(out / "data" / "calibration.txt", [t for t, _ in train[:CALIBRATION_TEXTS]])
    print(f"{out}/model → {minilm_dir()}; {EVALUATION_TEXTS} held-out tweets in data/evaluation.txt")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "stacks/minilm")
