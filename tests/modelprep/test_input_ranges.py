"""Integer inputs' ranges read from a .keras archive's layer graph, without TensorFlow."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from modelprep.families.keras.ranges import input_ranges


def _tensor(source: str) -> dict[str, object]:
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [source, 0, 0]}}


def _saved(path: Path, layers: list[dict[str, object]]) -> Path:
    """A .keras archive holding the config.json Keras writes (layers with their inbound nodes)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Functional", "config": {"layers": layers}}))
    return path


def test_an_input_feeding_embeddings_takes_the_narrowest_table(tmp_path: Path) -> None:
    layers: list[dict[str, object]] = [
        {"class_name": "InputLayer", "name": "user_id", "config": {}},
        {"class_name": "InputLayer", "name": "item_id", "config": {}},
        {"class_name": "InputLayer", "name": "pixels", "config": {}},
        {
            "class_name": "Embedding",
            "name": "e1",
            "config": {"input_dim": 200},
            "inbound_nodes": [{"args": [_tensor("user_id")], "kwargs": {}}],
        },
        {
            "class_name": "Embedding",
            "name": "e2",
            "config": {"input_dim": 300},
            "inbound_nodes": [{"args": [_tensor("item_id")], "kwargs": {}}],
        },
        {
            "class_name": "Embedding",
            "name": "e3",
            "config": {"input_dim": 250},
            "inbound_nodes": [{"args": [_tensor("item_id")], "kwargs": {}}],
        },
        {
            "class_name": "Dense",
            "name": "d",
            "config": {"units": 4},
            "inbound_nodes": [{"args": [_tensor("pixels")], "kwargs": {}}],
        },
    ]
    ranges = input_ranges(_saved(tmp_path / "m.keras", layers))
    assert ranges == {"user_id": (0, 199), "item_id": (0, 249)}


def test_other_formats_and_an_embedding_behind_another_layer_give_none(tmp_path: Path) -> None:
    layers: list[dict[str, object]] = [
        {"class_name": "InputLayer", "name": "x", "config": {}},
        {"class_name": "Lambda", "name": "shift", "config": {}, "inbound_nodes": [{"args": [_tensor("x")]}]},
        {
            "class_name": "Embedding",
            "name": "e",
            "config": {"input_dim": 10},
            "inbound_nodes": [{"args": [_tensor("shift")]}],
        },
    ]
    assert input_ranges(_saved(tmp_path / "m.keras", layers)) == {}
    (tmp_path / "m.h5").write_bytes(b"\x89HDF")
    assert input_ranges(tmp_path / "m.h5") == {}
