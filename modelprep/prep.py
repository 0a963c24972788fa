"""The prep stage: model + data + optimize settings → a gated, measured LiteRT artifact.

`prep_key` is cheap (it hashes bytes, runs no TensorFlow) so `pulumi preview` can show what
would change; `prep` does the work once per key and stores the result in the cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelprep.cache import Cache
from modelprep.errors import UserError
from modelprep.hashing import file_sha256, json_sha256

# Bump when conversion or evaluation changes, so cached artifacts are rebuilt.
PREP_VERSION = 1
ARTIFACT = "model.tflite"
REPORT = "report.json"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PrepRequest:
    model_path: str
    model_sha256: str | None
    calibration_path: str
    evaluation_path: str
    input_name: str
    sample_shape: tuple[int, ...]
    quantization: str
    max_accuracy_drop: float


@dataclass(frozen=True)
class PrepResult:
    key: str
    artifact_path: Path
    report: dict[str, Any]
    cached: bool


def prep_key(req: PrepRequest) -> str:
    """Content address of the result: the bytes of every input plus the settings."""
    return json_sha256(
        {
            "version": PREP_VERSION,
            "model": file_sha256(req.model_path),
            "calibration": file_sha256(req.calibration_path),
            "evaluation": file_sha256(req.evaluation_path),
            "settings": {k: v for k, v in asdict(req).items() if not k.endswith("_path")},
        }
    )


def cached_result(req: PrepRequest, cache: Cache | None = None) -> PrepResult | None:
    cache = cache or Cache()
    key = prep_key(req)
    entry = cache.get(key)
    if entry is None:
        return None
    return PrepResult(key, entry / ARTIFACT, json.loads((entry / REPORT).read_text()), cached=True)


def prep(req: PrepRequest, cache: Cache | None = None, progress: Progress = lambda _: None) -> PrepResult:
    """Return the cached result, or convert, evaluate and gate, then cache. Raises UserError
    when the gate fails, and then caches nothing: there is nothing deployable."""
    cache = cache or Cache()
    hit = cached_result(req, cache)
    if hit is not None:
        progress(f"cache hit {hit.key[:12]}: no TensorFlow work")
        return hit
    key = prep_key(req)
    check_pin(req)

    from modelprep import convert, evaluate
    from modelprep.data import load_npz

    progress("loading data")
    calibration = load_npz(req.calibration_path, "data.calibration", req.sample_shape, need_labels=False)
    evaluation = load_npz(req.evaluation_path, "data.evaluation", req.sample_shape, need_labels=True)
    assert evaluation.y is not None  # load_npz guarantees labels when asked
    progress("loading model")
    model = convert.load_model(req.model_path)

    progress("evaluating the float baseline (Keras)")
    baseline_acc = evaluate.accuracy(evaluate.keras_predict(model, evaluation.x), evaluation.y)
    progress("converting to float32 LiteRT (reference)")
    reference = convert.to_litert(req.model_path, "none", None)
    reference_acc = evaluate.accuracy(evaluate.litert_predict(reference, evaluation.x), evaluation.y)
    if req.quantization == "none":
        artifact, artifact_acc = reference, reference_acc
    else:
        progress(f"converting with {req.quantization} quantization")
        artifact = convert.to_litert(req.model_path, req.quantization, calibration.x)
        progress("evaluating the artifact (LiteRT)")
        artifact_acc = evaluate.accuracy(evaluate.litert_predict(artifact, evaluation.x), evaluation.y)

    report = build_report(req, key, artifact, artifact_acc, baseline_acc, len(reference), reference_acc, len(evaluation.x))
    gate(report)
    entry = cache.put(key, {ARTIFACT: artifact, REPORT: json.dumps(report, indent=2, sort_keys=True).encode()})
    progress(f"cached as {key[:12]}")
    return PrepResult(key, entry / ARTIFACT, report, cached=False)


def check_pin(req: PrepRequest) -> None:
    if req.model_sha256 is None:
        return
    actual = file_sha256(req.model_path)
    if actual != req.model_sha256:
        raise UserError.single(
            "model.yaml", "model.sha256", f"the model's bytes hash to {actual}, not the pinned {req.model_sha256}",
            "point model.path at the pinned model, or update the pin if the new model is intended",
        )


def build_report(
    req: PrepRequest, key: str, artifact: bytes, accuracy: float, baseline: float,
    reference_bytes: int, reference_accuracy: float, samples: int,
) -> dict[str, Any]:
    import hashlib

    return {
        "key": key,
        "variant": f"litert-{req.quantization}",
        "runtime": "litert",
        "quantization": req.quantization,
        "model_sha256": file_sha256(req.model_path),
        "artifact_sha256": hashlib.sha256(artifact).hexdigest(),
        "size_bytes": len(artifact),
        "accuracy": round(accuracy, 6),
        "baseline_accuracy": round(baseline, 6),
        "accuracy_drop": round(baseline - accuracy, 6),
        "max_accuracy_drop": req.max_accuracy_drop,
        "evaluation_samples": samples,
        "input": {"name": req.input_name, "shape": list(req.sample_shape), "dtype": "float32"},
        "baselines": {
            "keras_float": {"accuracy": round(baseline, 6)},
            "litert_float32": {"size_bytes": reference_bytes, "accuracy": round(reference_accuracy, 6)},
        },
    }


def gate(report: dict[str, Any]) -> None:
    drop, allowed = report["accuracy_drop"], report["max_accuracy_drop"]
    if drop > allowed + 1e-9:
        raise UserError.single(
            "model.yaml", "optimize.max_accuracy_drop",
            f"{report['variant']} loses {drop * 100:.2f} points of accuracy "
            f"({report['baseline_accuracy']:.4f} → {report['accuracy']:.4f}), more than the allowed {allowed * 100:.2f}",
            "allow a larger drop, or choose a gentler optimize.quantization (dynamic, float16, none)",
        )
