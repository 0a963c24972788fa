"""The ids an integer input may carry, read from the saved Keras model: an input that feeds an
Embedding layer takes 0 .. input_dim - 1. Anything else would index past the table (an error inside
the runtime, a 500) or, for a negative id, silently read another row (a wrong answer with a 200), so
the server refuses such a request alone with a 400 naming the input and the range.

Read from the `.keras` archive's config.json (no TensorFlow): the layer graph Keras itself writes.
An `.h5` file or a SavedModel directory yields nothing; their inputs keep the dtype's whole range.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def input_ranges(model_path: str | Path) -> dict[str, tuple[int, int]]:
    """{input name: (low, high)} for every input that feeds an Embedding layer directly; when it
    feeds several, the narrowest table decides."""
    path = Path(model_path)
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        return {}
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    layers = config.get("config", {}).get("layers", [])
    inputs = {layer.get("name") for layer in layers if layer.get("class_name") == "InputLayer"}
    ranges: dict[str, tuple[int, int]] = {}
    for layer in layers:
        size = layer.get("config", {}).get("input_dim") if layer.get("class_name") == "Embedding" else None
        if not isinstance(size, int) or size < 1:
            continue
        for source in _sources(layer.get("inbound_nodes", [])):
            if source in inputs:
                low, high = ranges.get(source, (0, size - 1))
                ranges[source] = (low, min(high, size - 1))
    return ranges


def _sources(node: Any) -> Iterator[str]:
    """The layer names a layer's inbound nodes read from (each tensor's keras_history)."""
    if isinstance(node, dict):
        history = node.get("config", {}).get("keras_history") if node.get("class_name") == "__keras_tensor__" else None
        if isinstance(history, list) and history and isinstance(history[0], str):
            yield history[0]
        for value in node.values():
            yield from _sources(value)
    elif isinstance(node, list):
        for value in node:
            yield from _sources(value)
