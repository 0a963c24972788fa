"""Keras model → LiteRT flatbuffer (post-training quantization) and → ONNX (tf2onnx, then
ONNX Runtime's own dynamic or static quantization)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iac.spec.errors import UserError
from modelprep.tf_env import tensorflow

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
ONNX_OPSET = 17


@dataclass(frozen=True)
class Converted:
    artifact: bytes
    notes: dict[str, Any] = field(default_factory=dict)


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
            str(path),
            field,
            f"cannot be loaded as a Keras model ({type(exc).__name__}: {str(exc)[:200]})",
            "save the model with model.save('model.keras') and point model.path at it",
        ) from None


def to_litert(model_path: str | Path, quantization: str, calibration: np.ndarray | None) -> bytes:
    """The artifact bytes only, for callers that need no notes; a failure names the model file."""
    return convert_litert(model_path, quantization, calibration, where=str(model_path)).artifact


def convert_litert(
    model_path: str | Path | Any,
    quantization: str,
    calibration: np.ndarray | None,
    int8_io: bool = False,
    *,
    where: str,
) -> Converted:
    """Convert; int8 is full-integer quantization calibrated on `calibration`. When an op has
    no int8 kernel, the conversion is retried letting that op run in float (the notes name
    those ops). `int8_io` makes the inputs and outputs int8 too. The batch dimension stays
    dynamic, so the server can run several samples at once. A conversion that fails is a
    UserError at `where` (the spec's line that asked for the variant)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(quantization)
    if quantization == "int8" and calibration is None:
        raise ValueError("int8 conversion needs calibration inputs")
    tf = tensorflow()
    exported = tempfile.TemporaryDirectory(prefix="modelprep-export-")

    def converter_for(fallback: bool) -> Any:
        if isinstance(model_path, (str, Path)) and Path(model_path).is_dir():
            converter = tf.lite.TFLiteConverter.from_saved_model(str(model_path))
        else:
            model = load_model(model_path) if isinstance(model_path, (str, Path)) else model_path
            if len(getattr(model, "inputs", None) or ()) > 1:
                # Several named inputs: the converter's Keras path cannot trace them; the model's
                # own SavedModel export keeps each input's name and dtype in the signature.
                if not any(Path(exported.name).iterdir()):
                    with contextlib.redirect_stdout(io.StringIO()):
                        model.export(exported.name)
                converter = tf.lite.TFLiteConverter.from_saved_model(exported.name)
            else:
                converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if quantization == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: _representative(calibration)
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if fallback:
                ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
            converter.target_spec.supported_ops = ops
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        return converter

    with exported:
        return _convert_litert(converter_for, quantization, where)


def _convert_litert(converter_for: Any, quantization: str, where: str) -> Converted:
    try:
        artifact = _run(converter_for(False))
    except Exception as exc:  # the converter reports unsupported ops as generic errors
        first = _first_line(exc)
    else:
        if quantization != "int8":
            return Converted(artifact)
        # The converter may keep an op without an int8 kernel in float32 (dequantize before it,
        # quantize after): say which, since those ops get none of int8's speed.
        float_ops = float_ops_of(artifact)
        notes = (
            {
                "int8_fallback": f"ops without an int8 kernel run in float32: {', '.join(float_ops)}",
                "float_ops": float_ops,
            }
            if float_ops
            else {}
        )
        return Converted(artifact, notes)
    if quantization != "int8":
        raise UserError.single(
            where,
            "optimize.variants",
            f"{quantization!r} conversion failed ({first})",
            "choose another variant for this model",
        )
    try:
        artifact = _run(converter_for(True))
    except Exception as exc:
        raise UserError.single(
            where,
            "optimize.variants",
            f"int8 conversion failed even with float fallback for ops without int8 kernels ({_first_line(exc)})",
            "drop the int8 variants (keep litert-dynamic or litert-float16) for this model",
        ) from None
    float_ops = float_ops_of(artifact)
    return Converted(
        artifact,
        {
            "int8_fallback": f"ops without an int8 kernel run in float32: {', '.join(float_ops) or 'none found'} "
            f"(the int8-only conversion failed: {first})",
            "float_ops": float_ops,
        },
    )


def float_ops_of(artifact: bytes) -> list[str]:
    """Operators of a LiteRT model that compute in float32 (quantize/dequantize excepted)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=artifact)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    names = set()
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only per-op view LiteRT offers
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        inputs = [tensors[i] for i in op["inputs"] if i in tensors]
        if any(np.dtype(t["dtype"]) == np.float32 for t in inputs):
            names.add(op["op_name"])
    return sorted(names)


def _run(converter: Any) -> bytes:
    import warnings

    # Keras' export prints the traced signature to stdout; keep stdout for the CLI's output.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return bytes(converter.convert())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if "error" in line.lower() and ("op" in line.lower() or "quantiz" in line.lower()):
            return line.strip()[:300]
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def _representative(calibration: np.ndarray) -> Iterator[Any]:
    if calibration.dtype.names is not None:  # several inputs: each by name, integer ids as integers
        for i in range(min(len(calibration), 500)):
            sample = calibration[i : i + 1]
            yield {name: _calibration_tensor(sample[name]) for name in calibration.dtype.names}
        return
    for sample in calibration[:500]:
        yield [sample[np.newaxis, ...].astype(np.float32)]


def _calibration_tensor(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values if values.dtype.kind in "iu" else values.astype(np.float32))


# --------------------------------------------------------------------------------------- ONNX
def to_onnx(
    model: Any,
    sample_shape: tuple[int, ...],
    input_name: str,
    *,
    where: str,
    inputs: tuple[tuple[str, tuple[int, ...], str], ...] | None = None,
) -> bytes:
    """Export the float model to ONNX (opset 17) with a dynamic batch; a failure is a UserError at `where`.
    With several `inputs` (name, sample shape, dtype), the graph takes each by name in its dtype."""
    tf = tensorflow()
    import tf2onnx

    if inputs is not None:
        names = [name for name, _, _ in inputs]
        spec = tuple(tf.TensorSpec((None, *shape), tf.as_dtype(dtype), name=name) for name, shape, dtype in inputs)
        function = tf.function(lambda *args: model(dict(zip(names, args)), training=False))
    else:
        spec = (tf.TensorSpec((None, *sample_shape), tf.float32, name=input_name),)
        function = tf.function(lambda x: model(x, training=False))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=ONNX_OPSET)
    except Exception as exc:
        raise UserError.single(
            where,
            "optimize.variants",
            f"ONNX export failed ({_first_line(exc)})",
            "drop the onnx-* variants for this model",
        ) from None
    return proto.SerializeToString()


def onnx_quantize(float_model: bytes, mode: str, calibration: np.ndarray | None = None) -> bytes:
    """ONNX Runtime's quantization: `dynamic` (int8 weights, activations quantized on the fly)
    or `static` (int8 weights and activations, QDQ format, calibrated on `calibration`)."""
    import logging

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("root").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        source, prepped, target = Path(tmp, "f.onnx"), Path(tmp, "p.onnx"), Path(tmp, "q.onnx")
        source.write_bytes(float_model)
        try:
            quant_pre_process(str(source), str(prepped), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the raw export then
            prepped = source
        if mode == "dynamic":
            quantize_dynamic(str(prepped), str(target), weight_type=QuantType.QInt8)
        elif mode == "static":
            assert calibration is not None

            class Reader(CalibrationDataReader):
                def __init__(self, name: str) -> None:
                    self.samples = iter(calibration[i : i + 1] for i in range(min(len(calibration), 300)))
                    self.name = name

                def get_next(self) -> dict[str, np.ndarray] | None:
                    sample = next(self.samples, None)
                    if sample is None:
                        return None
                    if sample.dtype.names is not None:  # several inputs, by name
                        return {n: _calibration_tensor(sample[n]) for n in sample.dtype.names}
                    return {self.name: sample.astype(np.float32)}

            import onnx

            name = onnx.load_model_from_string(float_model).graph.input[0].name
            quantize_static(
                str(prepped),
                str(target),
                Reader(name),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        else:
            raise ValueError(mode)
        return target.read_bytes()
