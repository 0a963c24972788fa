"""What a Hugging Face model folder says: its config, labels, pooling, and its weights as numpy arrays (no PyTorch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iac.spec.errors import UserError

SUPPORTED_TYPES = ("bert",)


@dataclass(frozen=True)
class Folder:
    path: Path
    config: dict[str, Any]

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def num_heads(self) -> int:
        return int(self.config["num_attention_heads"])

    @property
    def max_positions(self) -> int:
        return int(self.config.get("max_position_embeddings", 512))

    def labels(self) -> list[str] | None:
        """Class names in output order, from the config's id2label (None when it has none)."""
        id2label = self.config.get("id2label")
        if not id2label:
            return None
        return [str(id2label[k]) for k in sorted(id2label, key=int)]

    def pooling(self) -> tuple[str, bool]:
        """(mean | cls, normalize): a sentence-transformers folder says so in 1_Pooling and modules.json;
        otherwise mean pooling, L2-normalised (how sentence embeddings are compared)."""
        pooling, normalize = "mean", True
        pool_cfg = self.path / "1_Pooling" / "config.json"
        if pool_cfg.is_file():
            cfg = json.loads(pool_cfg.read_text())
            pooling = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
        modules = self.path / "modules.json"
        if modules.is_file():
            normalize = any("Normalize" in str(m.get("type", "")) for m in json.loads(modules.read_text()))
        return pooling, normalize

    def weights(self) -> dict[str, np.ndarray]:
        """The state dict (PyTorch names) from model.safetensors, as numpy."""
        from safetensors.numpy import load_file

        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise UserError.single(
                "model.yaml",
                "model.path",
                f"{self.path} has no .safetensors weights",
                "save the model with save_pretrained(safe_serialization=True)",
            )
        state: dict[str, np.ndarray] = {}
        for f in files:
            state.update(load_file(str(f)))
        return state


def open_folder(path: str | Path) -> Folder:
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError.single(
            "model.yaml",
            "model.path",
            f"{folder} has no config.json",
            "point model.path at a folder written by save_pretrained",
        )
    config = json.loads(config_file.read_text())
    if config.get("model_type") not in SUPPORTED_TYPES:
        raise UserError.single(
            "model.yaml",
            "model.path",
            f"model_type {config.get('model_type')!r} is not supported yet",
            f"use a model of type {', '.join(SUPPORTED_TYPES)} (BERT, MiniLM)",
        )
    if not (folder / "tokenizer.json").is_file():
        raise UserError.single(
            "model.yaml",
            "model.path",
            f"{folder} has no tokenizer.json",
            "save the tokenizer with the model (tokenizer.save_pretrained)",
        )
    return Folder(folder, config)


def read_texts(
    path: str | Path, need_labels: bool, labels: list[str] | None = None
) -> tuple[list[str], np.ndarray | None]:
    """Texts from .txt (one per line) or .jsonl ({"text": ..., "label": name or index}); labels as class indices."""
    p = Path(path)
    texts: list[str] = []
    ys: list[Any] = []
    if p.suffix == ".jsonl":
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UserError.single(
                    f"{p.name}:{n}",
                    "data",
                    'each line must be an object with a "text" string',
                    'write {"text": "...", "label": ...} per line',
                )
            texts.append(row["text"])
            ys.append(row.get("label"))
    else:
        texts = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UserError.single(p.name, "data", "holds no texts", "write one text per line")
    if not need_labels:
        return texts, None
    index = {name: i for i, name in enumerate(labels or [])}
    out = []
    for n, y in enumerate(ys, 1):
        if isinstance(y, str) and y in index:
            out.append(index[y])
        elif isinstance(y, int) and not isinstance(y, bool) and 0 <= y < max(len(index), 1):
            out.append(y)
        else:
            raise UserError.single(
                p.name,
                "data.evaluation",
                f"row {n}: label {y!r} is not one of the model's classes",
                f"use a class name ({', '.join(index)}) or its index",
            )
    return texts, np.asarray(out, dtype=np.int64)
