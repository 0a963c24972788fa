"""Pruning, weight clustering and quantization-aware training, in a child process.

tensorflow-model-optimization needs Keras 2 (`tf_keras`) and, when imported, sets
TF_USE_LEGACY_KERAS=1 for the whole process. The parent (Keras 3) stays untouched by running
this module as `python -m modelprep.families.keras.tfmot_worker JOB.json`:

- the job names the Keras 3 model, the fine-tuning and calibration data, the techniques, and
  where the spec writes the fields a problem may point at;
- the worker rebuilds the model in tf_keras (modelprep.families.keras.keras_bridge), applies each technique to its
  own copy, fine-tunes, strips the training wrappers, converts to LiteRT and writes the files;
- it reports on stdout, one JSON object a line: {"event": "progress", ...},
  {"event": "done", "outputs": {...}} or {"event": "error", "problems": [...]}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

_events = sys.stdout


def emit(event: str, **fields: Any) -> None:
    _events.write(json.dumps({"event": event, **fields}) + "\n")
    _events.flush()


def main(job_path: str) -> int:
    global _events
    # Events get a private copy of stdout; anything TensorFlow prints goes to stderr.
    _events = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from iac.spec.errors import UserError

    job = json.loads(Path(job_path).read_text())
    try:
        outputs = run(job)
    except UserError as exc:
        emit("error", problems=[p.__dict__ for p in exc.problems])
        return 3
    emit("done", outputs=outputs)
    return 0


def run(job: dict[str, Any]) -> dict[str, Any]:
    from modelprep.tf_env import tensorflow

    tf = tensorflow()
    import keras  # Keras 3, only to read the user's model
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from modelprep.families.keras import keras_bridge

    seed = int(job.get("seed", 7))
    tf_keras.utils.set_random_seed(seed)
    source = keras.models.load_model(job["model_path"], compile=False, safe_mode=True)
    base = keras_bridge.to_tf_keras(source)
    with np.load(job["train_path"], allow_pickle=False) as data:
        x = data["x"].astype(np.float32)
        y = data["y"] if "y" in data.files and job.get("use_labels", True) else None
    with np.load(job["calibration_path"], allow_pickle=False) as data:
        calibration = data["x"].astype(np.float32)
    teacher = base.predict(x, batch_size=256, verbose=0)
    loss, target = _loss_and_target(tf_keras, job["metric"], teacher, y)
    batch = int(job.get("batch_size", 32))
    steps_per_epoch = max(1, int(np.ceil(len(x) / batch)))
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Any] = {}

    for technique in job["techniques"]:
        name = technique["name"]
        epochs = int(technique["epochs"])
        model = tf_keras.models.clone_model(base)  # a fresh copy: no variables shared with `base`
        model.set_weights(base.get_weights())
        callbacks: list[Any] = [_Progress(name, epochs)]
        notes: dict[str, Any] = {}
        if name == "pruned":
            total = steps_per_epoch * epochs
            schedule, notes = _pruning_schedule(tfmot, technique, total, job["where"]["optimize.pruning.end_step"])
            model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
            callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
        elif name == "clustered":
            init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
            model = tfmot.clustering.keras.cluster_weights(
                model,
                number_of_clusters=int(technique["clusters"]),
                cluster_centroids_init=init,
            )
        elif name == "qat":
            model = tfmot.quantization.keras.quantize_model(model)
        else:
            raise ValueError(name)
        lr = float(technique.get("learning_rate", 1e-4 if name == "qat" else 5e-4))
        model.compile(optimizer=tf_keras.optimizers.Adam(lr), loss=loss)
        emit("progress", technique=name, stage="fine-tune", done=0, total=epochs)
        if epochs > 0:
            model.fit(x, target, batch_size=batch, epochs=epochs, verbose=0, callbacks=callbacks, shuffle=True)
        if name == "pruned":
            model = tfmot.sparsity.keras.strip_pruning(model)
            notes["sparsity"] = round(_sparsity(model), 4)
        elif name == "clustered":
            model = tfmot.clustering.keras.strip_clustering(model)
            notes["unique_weights_per_kernel"] = _unique_weights(model)
        for quantization in technique["quantizations"]:
            emit("progress", technique=name, stage=f"convert {quantization}", done=epochs, total=epochs)
            tflite = _convert(tf, model, quantization, calibration, qat=name == "qat")
            path = out_dir / f"{name}-{quantization}.tflite"
            path.write_bytes(tflite)
            outputs[f"{name}-{quantization}"] = {"path": str(path), "notes": notes}
    return outputs


def _loss_and_target(tf_keras: Any, metric: str, teacher: np.ndarray, y: np.ndarray | None) -> tuple[Any, np.ndarray]:
    """Labels when the data has them, else the float model's own outputs (distillation)."""
    if metric == "mae":
        return tf_keras.losses.MeanSquaredError(), (
            teacher if y is None else y.astype(np.float32).reshape(teacher.shape)
        )
    if y is None:
        return tf_keras.losses.MeanSquaredError(), teacher
    probabilities = bool(np.all(teacher >= 0) and np.allclose(teacher.sum(axis=-1), 1.0, atol=1e-3))
    return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities), y.astype(np.int64)


def _pruning_schedule(tfmot: Any, settings: dict[str, Any], total_steps: int, where: str) -> tuple[Any, dict[str, Any]]:
    from iac.spec.errors import UserError

    target = float(settings["target_sparsity"])
    # The settings come with the spec's defaults filled in; only end_step may be absent (None).
    begin = int(settings["begin_step"])
    frequency = max(1, min(int(settings["frequency"]), max(1, total_steps // 4)))
    end = settings.get("end_step")
    if end is None:  # reach the target at 70% of fine-tuning, on a pruning step, then recover
        end = begin + frequency * max(1, int((0.7 * total_steps - begin) // frequency))
    end = int(end)
    if begin >= total_steps or end >= total_steps or end <= begin:
        raise UserError.single(
            where,
            "optimize.pruning.end_step",
            f"pruning from step {begin} to {end} does not fit in the {total_steps} fine-tuning steps "
            f"({settings['epochs']} epochs of the fine-tuning data)",
            "lower begin_step/end_step, or raise optimize.pruning.epochs",
        )
    if settings["schedule"] == "constant":
        schedule = tfmot.sparsity.keras.ConstantSparsity(target, begin_step=begin, end_step=end, frequency=frequency)
    else:
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=target,
            begin_step=begin,
            end_step=end,
            frequency=frequency,
        )
    return schedule, {"begin_step": begin, "end_step": end, "frequency": frequency, "steps": total_steps}


def _sparsity(model: Any) -> float:
    zeros = total = 0
    for layer in model.layers:
        if getattr(layer, "kernel", None) is not None:
            values = np.asarray(layer.kernel)
            zeros += int(np.sum(values == 0))
            total += values.size
    return zeros / total if total else 0.0


def _unique_weights(model: Any) -> int:
    counts = [
        len(np.unique(np.asarray(layer.kernel))) for layer in model.layers if getattr(layer, "kernel", None) is not None
    ]
    return max(counts) if counts else 0


def _convert(tf: Any, model: Any, quantization: str, calibration: np.ndarray, qat: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not qat:  # a QAT model carries its own ranges
            converter.representative_dataset = lambda: ([s[np.newaxis].astype(np.float32)] for s in calibration[:500])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif quantization != "none":
        raise ValueError(quantization)
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


def _progress_class() -> type:
    import tf_keras

    class Progress(tf_keras.callbacks.Callback):
        def __init__(self, technique: str, epochs: int) -> None:
            super().__init__()
            self.technique, self.epochs = technique, epochs

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            emit(
                "progress",
                technique=self.technique,
                stage="fine-tune",
                done=epoch + 1,
                total=self.epochs,
                loss=float((logs or {}).get("loss", float("nan"))),
            )

    return Progress


def _Progress(technique: str, epochs: int) -> Any:  # noqa: N802 - reads like the class it builds
    return _progress_class()(technique, epochs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
