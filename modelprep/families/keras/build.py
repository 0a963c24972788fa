"""Building the candidates: each variant's artifact bytes, converted or fine-tuned.

Post-training variants are LiteRT or ONNX conversions of the loaded model; pruning, clustering and
QAT fine-tune in the tfmot worker process (Keras 2 stays out of this one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from iac.spec.errors import Problem, UserError
from modelprep.families.keras.settings import technique_settings
from modelprep.family import Progress, Step, Variant
from modelprep.request import PrepRequest, canon


def converted(
    req: PrepRequest, model: Any, calibration_x: Any, variant: Variant, onnx_float: dict[str, bytes], progress: Progress
) -> tuple[bytes, dict[str, Any]]:
    """(artifact, notes) for a post-training variant. `onnx_float` holds the float ONNX export
    once made, so the quantized ONNX variants share it."""
    from modelprep.families.keras import convert

    progress(f"converting {variant.name}")
    # A failed conversion points at the field that asked for the variant.
    where = req.where("optimize.quantization" if req.optimize.quantization is not None else "optimize.variants")
    if variant.runtime == "litert":
        result = convert.convert_litert(
            model if not Path(req.model_path).is_dir() else req.model_path,
            variant.quantization,
            calibration_x,
            int8_io=variant.name == "litert-int8-io",
            where=where,
        )
        if result.notes.get("int8_fallback"):
            progress(f"{variant.name}: {result.notes['int8_fallback']}")
        return result.artifact, result.notes
    if "onnx-float32" not in onnx_float:
        onnx_float["onnx-float32"] = convert.to_onnx(
            model, req.sample_shape, req.input_name, where=where, inputs=req.inputs
        )
    artifact = onnx_float["onnx-float32"]
    if variant.quantization != "none":
        artifact = convert.onnx_quantize(artifact, variant.quantization, calibration_x)
    return artifact, {}


def fine_tuned(
    req: PrepRequest, model: Any, variants: list[Variant], progress: Progress, step: Step
) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """{variant name: (artifact, notes)} for the pruned, clustered and QAT variants, made in one
    worker run (each technique fine-tunes once, then converts to each quantization asked for)."""
    from modelprep.families.keras import keras_bridge

    keras_bridge.check_convertible(model, where=req.model_path)
    techniques: dict[str, dict[str, Any]] = {}
    for variant in variants:
        t = variant.technique
        if t not in techniques:
            techniques[t] = {"name": t, **technique_settings(req.optimize, t), "quantizations": []}
        techniques[t]["quantizations"].append(variant.quantization)
    with tempfile.TemporaryDirectory(prefix="modelprep-tfmot-") as tmp:
        job = {
            "model_path": req.model_path,
            "calibration_path": req.calibration_path,
            "train_path": req.fine_tuning_path or req.calibration_path,
            "metric": req.optimize.metric.value,
            "out_dir": str(Path(tmp) / "out"),
            "techniques": list(techniques.values()),
            # where the worker's problems point in the spec
            "where": {path: req.where(path) for path in ("optimize.pruning.end_step",)},
        }
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(canon(job)))
        if not req.fine_tuning_path:
            progress(
                "fine-tuning on the calibration inputs, distilled from the float model "
                "(set optimize.fine_tuning_data for labelled data)"
            )
        outputs = run_worker(job_path, Path(tmp) / "stderr.txt", progress, step)
        return {
            f"{name}-{'float32' if q == 'none' else q}": (Path(o["path"]).read_bytes(), o["notes"])
            for key, o in outputs.items()
            for name, q in [key.split("-", 1)]
        }


def run_worker(job_path: Path, stderr_path: Path, progress: Progress, step: Step) -> dict[str, Any]:
    """Run modelprep.families.keras.tfmot_worker and relay its events; its UserErrors become ours."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelprep.families.keras.tfmot_worker", str(job_path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        result: dict[str, Any] | None = None
        problems: list[dict[str, str]] = []
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event["event"] == "progress":
                progress(f"{event['technique']}: {event['stage']} ({event['done']}/{event['total']} epochs)")
                step(f"fine-tune {event['technique']}", int(event["done"]), int(event["total"]))
            elif event["event"] == "done":
                result = event["outputs"]
            elif event["event"] == "error":
                problems = event["problems"]
        code = proc.wait()
    if problems:
        raise UserError([Problem(**p) for p in problems])
    if code != 0 or result is None:
        tail = stderr_path.read_text()[-2000:]
        raise RuntimeError(f"the tfmot worker failed (exit {code}):\n{tail}")
    return result
