"""Keras model → LiteRT flatbuffer, with the post-training quantization the spec asks for."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelprep.errors import UserError
from modelprep.tf_env import tensorflow

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")


def load_model(path: str | Path, field: str = "model.path") -> Any:
    """Load a .keras/.h5 file (safe mode: no arbitrary code from the file), or wrap a
    SavedModel's serving signature as a layer."""
    tensorflow()
    import keras

    path = Path(path)
    try:
        if path.is_dir():
            return keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file; all mean the same to a user
        raise UserError.single(
            str(path), field, f"cannot be loaded as a Keras model ({type(exc).__name__}: {str(exc)[:200]})",
            "save the model with model.save('model.keras') and point model.path at it",
        ) from None


def to_litert(model_path: str | Path, quantization: str, calibration: np.ndarray | None) -> bytes:
    """Convert; int8 is full-integer quantization calibrated on `calibration` (float I/O kept).
    The batch dimension stays dynamic, so the server can run several samples at once."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(quantization)
    tf = tensorflow()
    path = Path(model_path)
    if path.is_dir():
        converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(load_model(path))
    if quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if calibration is None:
            raise UserError.single("model.yaml", "data.calibration", "int8 needs representative inputs", "name a calibration .npz")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        # Keras' export prints the traced signature to stdout; keep stdout for the CLI's output.
        with contextlib.redirect_stdout(io.StringIO()):
            return bytes(converter.convert())
    except Exception as exc:  # the converter reports unsupported ops as generic errors
        raise UserError.single(
            "model.yaml", "optimize.quantization", f"{quantization!r} conversion failed ({str(exc).splitlines()[0][:300]})",
            "choose another quantization (e.g. dynamic) for this model",
        ) from None


def _representative(calibration: np.ndarray) -> Iterator[list[np.ndarray]]:
    for sample in calibration[:500]:
        yield [sample[np.newaxis, ...].astype(np.float32)]
