"""The compression suite on a TINY model (seconds, not minutes): every technique, the objective,
the gate, variant restriction, the JSON report, the per-variant cache, and bad input.

The full floors (sizes, speed-ups) are checked by benchmarks/prep_bench.py, not here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iac.spec.errors import UserError
from modelprep.cache import Cache
from modelprep.families.keras.variants import NAMES, candidates
from modelprep.prep import prep
from modelprep.report import PrepReport
from modelprep.request import PrepRequest

FIELDS = (
    "name",
    "runtime",
    "size_bytes",
    "gzip_bytes",
    "accuracy",
    "latency_p50_us",
    "latency_p99_us",
    "throughput_per_s",
    "chosen",
)
Request = Callable[..., PrepRequest]


@pytest.mark.tf
def test_every_technique_is_built_measured_and_listed(suite: dict[str, Any]) -> None:
    report: PrepReport = suite["result"].report
    names = [e.name for e in report.variants]
    assert names == list(NAMES)
    for entry in [*report.baselines, *report.variants]:
        assert entry.size_bytes > 0 and entry.latency_p50_us > 0 and entry.throughput_per_s > 0
        assert entry.latency_p99_us >= entry.latency_p50_us
        assert (entry.outputs_sha256 is None) == (entry.runtime == "keras")
    by = {e.name: e for e in report.variants}
    float32 = by["litert-float32"]
    assert by["litert-int8"].size_bytes < float32.size_bytes
    assert by["litert-int8-io"].notes.int8_fallback is None
    assert by["pruned-int8"].notes.sparsity == pytest.approx(0.5, abs=0.05)
    assert by["pruned-float32"].gzip_bytes < float32.gzip_bytes
    assert (by["clustered-float32"].notes.unique_weights_per_kernel or 99) <= 4
    assert by["qat-int8"].size_bytes < float32.size_bytes
    for name in ("onnx-float32", "onnx-dynamic", "onnx-static"):
        assert by[name].runtime == "onnx" and by[name].artifact_file == "model.onnx"
        assert by[name].eligible is False  # measured, listed, never chosen unless named
    assert all(e.accuracy > 0.8 for e in report.variants), [(e.name, e.accuracy) for e in report.variants]
    assert [b.name for b in report.baselines] == ["keras-predict", "keras-call", "litert-float32"]
    assert any(name.startswith("fine-tune") for name, _, _ in suite["steps"]), "progress reached the bars"
    # tfmot ran in a child process: this process still runs Keras 3, untouched.
    assert "tensorflow_model_optimization" not in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") is None


@pytest.mark.tf
def test_exactly_one_variant_is_chosen_and_it_is_what_was_cached(suite: dict[str, Any]) -> None:
    result = suite["result"]
    report = result.report
    chosen = [e for e in report.variants if e.chosen]
    assert len(chosen) == 1 and chosen[0].passed_gate and chosen[0].eligible
    assert chosen[0].name == report.variant
    eligible = [e for e in report.variants if e.passed_gate and e.eligible]
    assert chosen[0].size_bytes == min(e.size_bytes for e in eligible)  # objective smallest
    assert result.artifact_path.name == "model.tflite" and report.runtime == "litert"
    assert hashlib.sha256(result.artifact_path.read_bytes()).hexdigest() == report.artifact_sha256
    assert result.chart_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    outputs = np.load(result.outputs_path)
    assert hashlib.sha256(outputs.tobytes()).hexdigest() == chosen[0].outputs_sha256


@pytest.mark.tf
def test_a_changed_objective_re_measures_nothing(
    suite: dict[str, Any], tiny_request: Request, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelprep.families.keras.build
    import modelprep.families.keras.convert

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a cached variant was rebuilt")

    monkeypatch.setattr(modelprep.families.keras.convert, "convert_litert", refuse)
    monkeypatch.setattr(modelprep.families.keras.convert, "to_onnx", refuse)
    monkeypatch.setattr(modelprep.families.keras.build, "run_worker", refuse)
    fastest = prep(tiny_request(optimize={"objective": "fastest"}), Cache(cache_dir))
    assert not fastest.cached and fastest.key != suite["result"].key
    chosen = fastest.report.chosen
    eligible = [e for e in fastest.report.variants if e.passed_gate and e.eligible]
    assert chosen.latency_p50_us == min(e.latency_p50_us for e in eligible)
    again = prep(tiny_request(optimize={"objective": "fastest"}), Cache(cache_dir))
    assert again.cached and again.key == fastest.key


@pytest.mark.tf
def test_variants_restrict_the_candidates_and_allow_onnx(
    suite: dict[str, Any], tiny: Path, tiny_request: Request, cache_dir: Path
) -> None:
    result = prep(tiny_request(optimize={"variants": ["onnx-static"]}, all_variants=False), Cache(cache_dir))
    report = result.report
    assert [e.name for e in report.variants] == ["onnx-static"]
    assert report.variant == "onnx-static" and report.runtime == "onnx" and report.artifact_file == "model.onnx"
    assert result.artifact_path.name == "model.onnx"
    from serving.onnx_runtime import OnnxModel

    with np.load(tiny / "data" / "evaluation.npz") as data:
        outputs = OnnxModel(result.artifact_path).predict(data["x"].astype(np.float32))
    np.testing.assert_array_equal(outputs, np.load(result.outputs_path))  # what the server runs is what prep measured


@pytest.mark.tf
def test_cli_json_has_baselines_and_variants_and_all_variants(
    suite: dict[str, Any], tiny: Path, cache_dir: Path
) -> None:
    # The spec's settings equal the suite's request, so every variant comes from the cache.
    env = {**os.environ, "MODELSTACK_CACHE": str(cache_dir)}
    run = subprocess.run(
        [sys.executable, "-m", "iac.cli.app", "prep", str(tiny / "model.yaml"), "--json", "--all-variants"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert PrepReport.model_validate(report) == suite["result"].report.model_copy(update={"key": report["key"]})
    assert {"baselines", "variants", "key"} <= set(report)
    assert [e["name"] for e in report["variants"]] == list(NAMES)
    assert sum(e["chosen"] for e in report["variants"]) == 1
    for entry in [*report["baselines"], *report["variants"]]:
        assert set(FIELDS) <= set(entry)
    table = subprocess.run(
        [sys.executable, "-m", "iac.cli.app", "prep", str(tiny / "model.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert table.returncode == 0, table.stderr[-3000:]
    assert "keras-predict" in table.stdout and "pruned-int8" in table.stdout and "chosen" in table.stdout
    assert "report.png" in table.stdout


def test_request_survives_pulumi_state(paper_request: Request) -> None:
    """Pulumi state turns ints into floats and drops None: the typed request and its key do not change."""
    from modelprep.request import prep_key

    req = paper_request(optimize={"variants": ["litert-int8"]}, all_variants=False)

    def as_state(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: as_state(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [as_state(v) for v in value]
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    back = PrepRequest.model_validate(as_state(json.loads(req.model_dump_json())))
    assert back == req and prep_key(back) == prep_key(req)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.tf
def test_ops_without_int8_kernels_fall_back_to_float_and_say_so(tmp_path: Path) -> None:
    from modelprep.tf_env import tensorflow

    tensorflow()
    import keras

    inputs = keras.Input((8,), name="x")
    outputs = keras.ops.cumsum(keras.layers.Dense(4)(inputs), axis=-1)  # CUMSUM has no int8 kernel
    keras.Model(inputs, outputs).save(tmp_path / "cumsum.keras")
    x = np.random.default_rng(0).random((64, 8), dtype=np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    np.savez(tmp_path / "eval.npz", x=x, y=np.zeros(64, np.int64))
    req = PrepRequest(
        model_path=str(tmp_path / "cumsum.keras"),
        calibration_path=str(tmp_path / "cal.npz"),
        evaluation_path=str(tmp_path / "eval.npz"),
        input_name="x",
        sample_shape=(8,),
        optimize={"variants": ["litert-int8"], "max_accuracy_drop": 1.0},
        latency_budget_s=0.01,
    )
    messages: list[str] = []
    report = prep(req, Cache(tmp_path / "cache"), progress=messages.append).report
    assert report.variants[0].notes.float_ops == ["CUMSUM"]
    assert any("run in float32: CUMSUM" in m for m in messages)
    # ... and pruning/QAT cannot rebuild the raw op in Keras 2: a UserError says which and why.
    with pytest.raises(UserError) as info:
        prep(req.changed(optimize={"variants": ["pruned-int8"]}), Cache(tmp_path / "cache"))
    assert (
        "'cumsum'" in str(info.value)
        and "no tf_keras equivalent" in str(info.value)
        and "optimize.variants" in str(info.value)
    )


@pytest.mark.tf
def test_subclassed_models_and_custom_layers_cannot_be_bridged() -> None:
    from modelprep.families.keras.keras_bridge import check_convertible
    from modelprep.tf_env import tensorflow

    tensorflow()
    import keras

    class Doubler(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x * 2

    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x: Any) -> Any:
            return self.dense(x)

    with pytest.raises(UserError, match=r"subclassed model \(Subclassed\).*call\(\)"):
        check_convertible(Subclassed())
    inputs = keras.Input((4,))
    custom = keras.Model(inputs, keras.layers.Dense(2)(Doubler(name="doubler")(inputs)))
    with pytest.raises(UserError, match=r"custom layer 'doubler'.*no tf_keras equivalent"):
        check_convertible(custom)


@pytest.mark.tf
def test_the_bridge_copies_a_functional_model_exactly() -> None:
    from modelprep.families.keras.keras_bridge import to_tf_keras
    from modelprep.tf_env import tensorflow

    tensorflow()
    import keras

    inputs = keras.Input((6,))
    a = keras.layers.Dense(5, activation="relu", kernel_regularizer="l2")(inputs)
    b = keras.layers.Dense(5)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Add()([a, b])))
    clone = to_tf_keras(model)
    x = np.random.default_rng(1).random((7, 6), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    clone.layers[-1].set_weights([w * 0 for w in clone.layers[-1].get_weights()])
    assert np.abs(np.asarray(model(x))).sum() > 0, "training the copy never changes the user's model"


@pytest.mark.tf
def test_calibration_of_the_wrong_dtype_is_a_user_error(tiny_request: Request, tmp_path: Path) -> None:
    path = tmp_path / "bool.npz"
    np.savez(path, x=np.zeros((10, 8, 8, 1), bool))
    with pytest.raises(UserError, match=r"data.calibration: 'x' has dtype bool.*float32"):
        prep(
            tiny_request(calibration_path=str(path), optimize={"variants": ["litert-int8"]}, all_variants=False),
            Cache(tmp_path),
        )


@pytest.mark.tf
def test_evaluation_without_labels_and_fine_tuning_of_the_wrong_shape(tiny_request: Request, tmp_path: Path) -> None:
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=np.zeros((10, 8, 8, 1), np.float32))
    with pytest.raises(UserError, match=r"data.evaluation: has no labels"):
        prep(
            tiny_request(evaluation_path=str(path), optimize={"variants": ["litert-int8"]}, all_variants=False),
            Cache(tmp_path),
        )
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((10, 64), np.float32))
    with pytest.raises(UserError, match=r"optimize.fine_tuning_data: 'x' has shape \[10, 64\].*\[N, 8, 8, 1\]"):
        prep(
            tiny_request(fine_tuning_path=str(wrong), optimize={"variants": ["pruned-int8"]}, all_variants=False),
            Cache(tmp_path),
        )


@pytest.mark.tf
def test_corrupt_model_and_pin_mismatch_are_user_errors(tiny_request: Request, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match=r"model.path: cannot be loaded as a Keras model"):
        prep(
            tiny_request(model_path=str(corrupt), optimize={"variants": ["litert-int8"]}, all_variants=False),
            Cache(tmp_path),
        )
    with pytest.raises(UserError, match=r"model.sha256: the model's bytes hash to [0-9a-f]{64}, not the pinned"):
        prep(tiny_request(model_sha256="1" * 64), Cache(tmp_path))


def test_unknown_variant_or_objective_cannot_reach_prep(paper_request: Request) -> None:
    """The spec's models own the names and the defaults: a request holds only what they accept."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        paper_request(optimize={"variants": ["litert-int4"], "objective": "tiniest"})
    assert {e["loc"][:2] for e in info.value.errors()} == {("optimize", "objective"), ("optimize", "variants")}


@pytest.mark.tf
def test_a_pruning_schedule_longer_than_fine_tuning_is_a_user_error_at_the_specs_line(
    tiny: Path, tmp_path: Path
) -> None:
    """Raised in the tfmot child process, reported here as the same UserError, at the spec's line."""
    from iac.spec.load import load_resolved
    from modelprep.request import prep_request

    spec = tiny / "long-pruning.yaml"
    spec.write_text(
        (tiny / "model.yaml")
        .read_text()
        .replace(
            "pruning: {target_sparsity: 0.5, frequency: 2, epochs: 1}",
            "variants: [pruned-int8]\n  pruning:\n    end_step: 10000",
        )
    )
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "end_step" in text)
    with pytest.raises(
        UserError,
        match=r"optimize.pruning.end_step: pruning from step 0 to 10000 does not fit in the \d+ fine-tuning steps",
    ) as info:
        prep(prep_request(load_resolved(spec)).changed(latency_budget_s=0.02), Cache(tmp_path))
    assert info.value.problems[0].where == f"long-pruning.yaml:{line}"


def test_the_cnn_stack_is_shaped_like_the_digits_stack(tmp_path: Path) -> None:
    from iac.spec.load import load_resolved
    from modelprep.request import prep_request

    repo = Path(__file__).resolve().parents[2]
    stack, digits = repo / "stacks" / "digits-cnn", repo / "stacks" / "digits"
    for name in ("Pulumi.yaml", "__main__.py", ".pulumi-state/.gitignore", "model.yaml"):
        assert (stack / name).is_file(), name
    assert "url: file://./.pulumi-state" in (stack / "Pulumi.yaml").read_text()
    assert (stack / ".pulumi-state/.gitignore").read_text() == (digits / ".pulumi-state/.gitignore").read_text()
    folder = tmp_path / "cnn"
    (folder / "model").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "model.yaml").write_text((repo / "modelprep" / "examples" / "specs" / "digits-cnn.yaml").read_text())
    for name in ("model/digits_cnn.keras", "data/calibration.npz", "data/evaluation.npz", "data/train.npz"):
        (folder / name).write_bytes(b"placeholder")
    request = prep_request(load_resolved(folder / "model.yaml"))
    o = request.optimize
    assert request.sample_shape == (32, 32, 1) and o.objective == "fastest" and o.quantization is None
    assert o.pruning is not None and o.pruning.target_sparsity >= 0.8
    assert request.fine_tuning_path == str((folder / "data" / "train.npz").resolve())
    names = [c.variant.name for c in candidates(None, None, False, True, False, False, False) if c.eligible]
    assert "pruned-int8" in names and not any(n.startswith("onnx") for n in names)
