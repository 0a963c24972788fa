"""Accuracy of the float baseline (Keras) and of an artifact (LiteRT, the runtime that serves it)."""

from __future__ import annotations

from typing import Any

import numpy as np

BATCH = 256


def keras_predict(model: Any, x: np.ndarray) -> np.ndarray:
    outputs = [np.asarray(_first(model(x[i : i + BATCH]))) for i in range(0, len(x), BATCH)]
    return np.concatenate(outputs)


def litert_predict(artifact: bytes, x: np.ndarray, threads: int = 1) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=artifact, num_threads=threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    results = []
    for i in range(0, len(x), BATCH):
        batch = x[i : i + BATCH]
        interpreter.resize_tensor_input(inp["index"], [len(batch), *x.shape[1:]])
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], batch.astype(np.float32))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(results)


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


def _first(out: Any) -> Any:
    return next(iter(out.values())) if isinstance(out, dict) else out
