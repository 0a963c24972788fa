"""The compression suite on a TINY model (seconds, not minutes): every technique, the objective,
the gate, variant restriction, the JSON report, the per-variant cache, and bad input.

The full floors (sizes, speed-ups) are checked by benchmarks/prep_bench.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelprep.cache import Cache
from iac.spec.errors import UserError
from modelprep.prep import PrepRequest, prep, prep_key
from modelprep.select import choose, mark_gate, miss_problems
from modelprep.variants import CATALOG, NAMES, candidates

FIELDS = ("name", "runtime", "size_bytes", "gzip_bytes", "accuracy", "latency_p50_us", "latency_p99_us", "throughput_per_s", "chosen")
# The same settings in the request below and in the spec the CLI tests write, so the CLI finds
# every variant in the cache the suite filled.
PRUNING = {"target_sparsity": 0.5, "schedule": "polynomial", "begin_step": 0, "end_step": None, "frequency": 2, "epochs": 1}
CLUSTERING = {"clusters": 4, "epochs": 1}
QAT = {"epochs": 1}
SPEC = """\
name: tiny
model:
  path: model/tiny.keras
  inputs:
    - name: image
      shape: [8, 8, 1]
data:
  calibration: data/calibration.npz
  evaluation: data/evaluation.npz
optimize:
  max_accuracy_drop: 0.05
  pruning: {target_sparsity: 0.5, frequency: 2, epochs: 1}
  clustering: {clusters: 4, epochs: 1}
  qat: {epochs: 1}
  fine_tuning_data: data/train.npz
"""


# ------------------------------------------------------------------------------ pure logic
def _entry(name: str, size: int, p50: float, acc: float, eligible: bool = True) -> dict[str, Any]:
    return {"name": name, "runtime": "litert", "size_bytes": size, "gzip_bytes": size, "latency_p50_us": p50,
            "accuracy": acc, "eligible": eligible}


def test_objective_chooses_smallest_fastest_or_balanced_and_never_a_failure() -> None:
    entries = [
        _entry("big-fast", 1000, 10.0, 0.95),
        _entry("small-slow", 100, 100.0, 0.95),
        _entry("middle", 200, 15.0, 0.95),
        _entry("tiny-but-wrong", 10, 1.0, 0.50),
        _entry("tinier-onnx", 5, 0.5, 0.95, eligible=False),
    ]
    mark_gate(entries, baseline=0.96, metric="accuracy", allowed=0.02)
    assert [e["passed_gate"] for e in entries] == [True, True, True, False, True]
    assert choose(entries, "smallest", 0.02)[0]["name"] == "small-slow"
    assert choose(entries, "fastest", 0.02)[0]["name"] == "big-fast"
    # balanced: log2(200/100) + log2(15/10) = 1.58 beats log2(10) + 0 = 3.3 and 0 + log2(10) = 3.3
    assert choose(entries, "balanced", 0.02)[0]["name"] == "middle"


def test_gate_error_lists_every_candidate_and_its_miss() -> None:
    entries = [_entry("litert-int8", 100, 1.0, 0.90), _entry("litert-float16", 200, 2.0, 0.93),
               _entry("onnx-float32", 400, 3.0, 0.96, eligible=False)]
    entries[2]["not_eligible_because"] = "runtime onnx: name it in optimize.variants to allow it"
    mark_gate(entries, baseline=0.96, metric="accuracy", allowed=0.01)
    report = {"metric": "accuracy", "max_accuracy_drop": 0.01, "baseline_accuracy": 0.96, "variants": entries}
    assert choose(entries, "smallest", 0.01)[0] is None
    messages = [str(p) for p in miss_problems(report)]
    assert len(messages) == 3
    assert "litert-int8 loses 6.00 points of accuracy (0.9600 → 0.9000), 5.00 points more than the allowed 1.00 points" in messages[0]
    assert "litert-float16 loses 3.00 points" in messages[1] and "2.00 points more" in messages[1]
    assert "onnx-float32 passes the gate" in messages[2] and "optimize.variants" in messages[2]
    assert all("optimize.max_accuracy_drop" in m and "; " in m for m in messages)


def test_mae_gate_counts_an_increase_as_the_loss() -> None:
    entries = [_entry("a", 1, 1.0, 0.30), _entry("b", 1, 1.0, 0.22)]
    mark_gate(entries, baseline=0.20, metric="mae", allowed=0.05)
    assert [e["passed_gate"] for e in entries] == [False, True]
    report = {"metric": "mae", "max_accuracy_drop": 0.05, "baseline_accuracy": 0.20, "variants": entries[:1]}
    assert "raises mae by 0.1000 (0.2000 → 0.3000), 0.0500 more than the allowed 0.0500" in str(miss_problems(report)[0])


def test_metrics() -> None:
    from modelprep.evaluate import score

    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert score("accuracy", scores, labels) == pytest.approx(1 / 3)
    assert score("top_k", scores, labels, top_k=2) == pytest.approx(2 / 3)
    assert score("mae", np.array([[1.0], [2.0]]), np.array([1.5, 2.0], np.float32)) == pytest.approx(0.25)


def test_candidates_default_legacy_restricted_and_all() -> None:
    default = candidates(None, None, False, False, False, False, False)
    assert [c.variant.name for c in default if c.eligible] == ["litert-float32", "litert-dynamic", "litert-float16", "litert-int8"]
    assert [c.variant.name for c in default if not c.eligible] == ["onnx-float32", "onnx-dynamic", "onnx-static"]
    legacy = candidates(None, "int8", False, False, False, False, False)
    assert [(c.variant.name, c.eligible) for c in legacy] == [("litert-int8", True)]
    restricted = candidates(("onnx-static", "litert-int8"), None, False, False, False, False, False)
    assert [(c.variant.name, c.eligible) for c in restricted] == [("litert-int8", True), ("onnx-static", True)]
    everything = candidates(None, None, False, False, False, False, True)
    assert [c.variant.name for c in everything] == list(NAMES)
    configured = candidates(None, None, True, True, False, True, False)
    assert {"litert-int8-io", "pruned-float32", "pruned-int8", "qat-int8"} <= {c.variant.name for c in configured}
    assert not {"clustered-int8"} & {c.variant.name for c in configured}


# ----------------------------------------------------------------------------- tiny model
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8x8x1 conv net on scikit-learn's digits: trains in a couple of seconds."""
    from modelprep.examples.digits import digits_arrays
    from modelprep.tf_env import tensorflow

    tensorflow()
    import keras

    folder = tmp_path_factory.mktemp("tiny")
    (folder / "model").mkdir()
    (folder / "data").mkdir()
    x_train, y_train, x_eval, y_eval = digits_arrays()
    x_train, x_eval = x_train.reshape(-1, 8, 8, 1), x_eval.reshape(-1, 8, 8, 1)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=6, batch_size=64, verbose=0)
    model.save(folder / "model" / "tiny.keras")
    np.savez(folder / "data" / "calibration.npz", x=x_train[:100])
    np.savez(folder / "data" / "evaluation.npz", x=x_eval[:200], y=y_eval[:200])
    np.savez(folder / "data" / "train.npz", x=x_train[:400], y=y_train[:400])
    (folder / "model.yaml").write_text(SPEC)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("suite-cache")


def _request(folder: Path, **changes: Any) -> PrepRequest:
    base = PrepRequest(
        model_path=str(folder / "model" / "tiny.keras"), model_sha256=None,
        calibration_path=str(folder / "data" / "calibration.npz"), evaluation_path=str(folder / "data" / "evaluation.npz"),
        input_name="image", sample_shape=(8, 8, 1), max_accuracy_drop=0.05, pruning=PRUNING, clustering=CLUSTERING,
        qat=QAT, fine_tuning_path=str(folder / "data" / "train.npz"), all_variants=True, latency_budget_s=0.02,
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def suite(tiny: Path, cache_dir: Path) -> dict[str, Any]:
    steps: list[tuple[str, int, int]] = []
    result = prep(_request(tiny), Cache(cache_dir), step=lambda *s: steps.append(s))
    return {"result": result, "steps": steps}


@pytest.mark.tf
def test_every_technique_is_built_measured_and_listed(suite: dict[str, Any]) -> None:
    report = suite["result"].report
    names = [e["name"] for e in report["variants"]]
    assert names == list(NAMES)
    for entry in [*report["baselines"], *report["variants"]]:
        for field in FIELDS:
            assert field in entry, (entry["name"], field)
        assert entry["size_bytes"] > 0 and entry["latency_p50_us"] > 0 and entry["throughput_per_s"] > 0
        assert entry["latency_p99_us"] >= entry["latency_p50_us"]
    by = {e["name"]: e for e in report["variants"]}
    float32 = by["litert-float32"]
    assert by["litert-int8"]["size_bytes"] < float32["size_bytes"]
    assert by["litert-int8-io"]["notes"] == {} or "int8_fallback" not in by["litert-int8-io"]["notes"]
    assert by["pruned-int8"]["notes"]["sparsity"] == pytest.approx(0.5, abs=0.05)
    assert by["pruned-float32"]["gzip_bytes"] < float32["gzip_bytes"]
    assert by["clustered-float32"]["notes"]["unique_weights_per_kernel"] <= 4
    assert by["qat-int8"]["size_bytes"] < float32["size_bytes"]
    for name in ("onnx-float32", "onnx-dynamic", "onnx-static"):
        assert by[name]["runtime"] == "onnx" and by[name]["artifact_file"] == "model.onnx"
        assert by[name]["eligible"] is False  # measured, listed, never chosen unless named
    assert all(e["accuracy"] > 0.8 for e in report["variants"]), [(e["name"], e["accuracy"]) for e in report["variants"]]
    assert [b["name"] for b in report["baselines"]] == ["keras-predict", "keras-call", "litert-float32"]
    assert any(name.startswith("fine-tune") for name, _, _ in suite["steps"]), "progress reached the bars"
    # tfmot ran in a child process: this process still runs Keras 3, untouched.
    assert "tensorflow_model_optimization" not in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") is None


@pytest.mark.tf
def test_exactly_one_variant_is_chosen_and_it_is_what_was_cached(suite: dict[str, Any]) -> None:
    result = suite["result"]
    report = result.report
    chosen = [e for e in report["variants"] if e["chosen"]]
    assert len(chosen) == 1 and chosen[0]["passed_gate"] and chosen[0]["eligible"]
    assert chosen[0]["name"] == report["variant"]
    eligible = [e for e in report["variants"] if e["passed_gate"] and e["eligible"]]
    assert chosen[0]["size_bytes"] == min(e["size_bytes"] for e in eligible)  # objective smallest
    assert result.artifact_path.name == "model.tflite" and report["runtime"] == "litert"
    import hashlib

    assert hashlib.sha256(result.artifact_path.read_bytes()).hexdigest() == report["artifact_sha256"]
    assert result.chart_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.tf
def test_a_changed_objective_re_measures_nothing(suite: dict[str, Any], tiny: Path, cache_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import modelprep.convert
    import modelprep.prep

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a cached variant was rebuilt")

    monkeypatch.setattr(modelprep.convert, "convert_litert", refuse)
    monkeypatch.setattr(modelprep.convert, "to_onnx", refuse)
    monkeypatch.setattr(modelprep.prep, "run_worker", refuse)
    fastest = prep(_request(tiny, objective="fastest"), Cache(cache_dir))
    assert not fastest.cached and fastest.key != suite["result"].key
    chosen = next(e for e in fastest.report["variants"] if e["chosen"])
    eligible = [e for e in fastest.report["variants"] if e["passed_gate"] and e["eligible"]]
    assert chosen["latency_p50_us"] == min(e["latency_p50_us"] for e in eligible)
    again = prep(_request(tiny, objective="fastest"), Cache(cache_dir))
    assert again.cached and again.key == fastest.key


@pytest.mark.tf
def test_variants_restrict_the_candidates_and_allow_onnx(suite: dict[str, Any], tiny: Path, cache_dir: Path) -> None:
    result = prep(_request(tiny, variants=("onnx-static",), all_variants=False), Cache(cache_dir))
    report = result.report
    assert [e["name"] for e in report["variants"]] == ["onnx-static"]
    assert report["variant"] == "onnx-static" and report["runtime"] == "onnx" and report["artifact_file"] == "model.onnx"
    assert result.artifact_path.name == "model.onnx"
    from modelprep.evaluate import onnx_predict

    with np.load(tiny / "data" / "evaluation.npz") as data:
        outputs = onnx_predict(result.artifact_path.read_bytes(), data["x"][:4].astype(np.float32))
    assert outputs.shape == (4, 10)


@pytest.mark.tf
def test_cli_json_has_baselines_and_variants_and_all_variants(suite: dict[str, Any], tiny: Path, cache_dir: Path) -> None:
    # The spec's settings equal the suite's request, so every variant comes from the cache.
    env = {**os.environ, "MODELSTACK_CACHE": str(cache_dir)}
    run = subprocess.run([sys.executable, "-m", "iac.cli.app", "prep", str(tiny / "model.yaml"), "--json", "--all-variants"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert {"baselines", "variants", "key"} <= set(report)
    assert [e["name"] for e in report["variants"]] == list(NAMES)
    assert sum(e["chosen"] for e in report["variants"]) == 1
    for entry in [*report["baselines"], *report["variants"]]:
        assert set(FIELDS) <= set(entry)
    table = subprocess.run([sys.executable, "-m", "iac.cli.app", "prep", str(tiny / "model.yaml")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert table.returncode == 0, table.stderr[-3000:]
    assert "keras-predict" in table.stdout and "pruned-int8" in table.stdout and "chosen" in table.stdout
    assert "report.png" in table.stdout


@pytest.mark.tf
def test_request_survives_pulumi_state(tiny: Path) -> None:
    """Pulumi turns ints into floats and drops None: the key must not change."""
    req = _request(tiny, variants=("litert-int8",), all_variants=False)
    data = json.loads(json.dumps(req.to_dict()))
    data = {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in data.items() if v is not None}
    data["pruning"] = {k: float(v) if isinstance(v, int) else v for k, v in data["pruning"].items() if v is not None}
    assert prep_key(PrepRequest.from_dict(data)) == prep_key(req)


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
    req = PrepRequest(model_path=str(tmp_path / "cumsum.keras"), model_sha256=None, calibration_path=str(tmp_path / "cal.npz"),
                      evaluation_path=str(tmp_path / "eval.npz"), input_name="x", sample_shape=(8,),
                      variants=("litert-int8",), max_accuracy_drop=1.0, latency_budget_s=0.01)
    messages: list[str] = []
    report = prep(req, Cache(tmp_path / "cache"), progress=messages.append).report
    assert report["variants"][0]["notes"]["float_ops"] == ["CUMSUM"]
    assert any("run in float32: CUMSUM" in m for m in messages)
    # ... and pruning/QAT cannot rebuild the raw op in Keras 2: a UserError says which and why.
    with pytest.raises(UserError) as info:
        prep(replace(req, variants=("pruned-int8",)), Cache(tmp_path / "cache"))
    assert "'cumsum'" in str(info.value) and "no tf_keras equivalent" in str(info.value) and "optimize.variants" in str(info.value)


@pytest.mark.tf
def test_subclassed_models_and_custom_layers_cannot_be_bridged() -> None:
    from modelprep.keras_bridge import check_convertible
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
    from modelprep.keras_bridge import to_tf_keras
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
def test_calibration_of_the_wrong_dtype_is_a_user_error(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "bool.npz"
    np.savez(path, x=np.zeros((10, 8, 8, 1), bool))
    with pytest.raises(UserError, match=r"data.calibration: 'x' has dtype bool.*float32"):
        prep(_request(tiny, calibration_path=str(path), variants=("litert-int8",), all_variants=False), Cache(tmp_path))


@pytest.mark.tf
def test_evaluation_without_labels_and_fine_tuning_of_the_wrong_shape(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=np.zeros((10, 8, 8, 1), np.float32))
    with pytest.raises(UserError, match=r"data.evaluation: has no labels"):
        prep(_request(tiny, evaluation_path=str(path), variants=("litert-int8",), all_variants=False), Cache(tmp_path))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((10, 64), np.float32))
    with pytest.raises(UserError, match=r"optimize.fine_tuning_data: 'x' has shape \[10, 64\].*\[N, 8, 8, 1\]"):
        prep(_request(tiny, fine_tuning_path=str(wrong), variants=("pruned-int8",), all_variants=False), Cache(tmp_path))


@pytest.mark.tf
def test_corrupt_model_and_pin_mismatch_are_user_errors(tiny: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match=r"model.path: cannot be loaded as a Keras model"):
        prep(_request(tiny, model_path=str(corrupt), variants=("litert-int8",), all_variants=False), Cache(tmp_path))
    with pytest.raises(UserError, match=r"model.sha256: the model's bytes hash to [0-9a-f]{64}, not the pinned"):
        prep(_request(tiny, model_sha256="1" * 64), Cache(tmp_path))


@pytest.mark.tf
def test_unknown_variant_or_objective_in_a_request_is_a_user_error(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        prep(_request(tiny, variants=("litert-int4",), objective="tiniest"), Cache(tmp_path))
    paths = [p.path for p in info.value.problems]
    assert paths == ["optimize.objective", "optimize.variants"]


def test_catalog_names_match_the_spec_enum() -> None:
    from iac.spec.models import VariantName

    assert [v.value for v in VariantName] == list(CATALOG)


@pytest.mark.tf
def test_a_pruning_schedule_longer_than_fine_tuning_is_a_user_error(tiny: Path, tmp_path: Path) -> None:
    """Raised in the tfmot child process, reported here as the same UserError."""
    request = _request(tiny, variants=("pruned-int8",), all_variants=False, pruning={**PRUNING, "end_step": 10_000})
    with pytest.raises(UserError, match=r"optimize.pruning.end_step: pruning from step 0 to 10000 does not fit in the \d+ fine-tuning steps"):
        prep(request, Cache(tmp_path))


def test_the_cnn_stack_is_shaped_like_the_digits_stack(tmp_path: Path) -> None:
    from iac.spec.load import load_resolved
    from modelprep.request import prep_request

    repo = Path(__file__).resolve().parent.parent
    stack, digits = repo / "stacks" / "digits-cnn", repo / "stacks" / "digits"
    for name in ("Pulumi.yaml", "__main__.py", ".pulumi-state/.gitignore", "model.yaml"):
        assert (stack / name).is_file(), name
    assert "url: file://./.pulumi-state" in (stack / "Pulumi.yaml").read_text()
    assert (stack / ".pulumi-state/.gitignore").read_text() == (digits / ".pulumi-state/.gitignore").read_text()
    folder = tmp_path / "cnn"
    (folder / "model").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "model.yaml").write_text((stack / "model.yaml").read_text())
    for name in ("model/digits_cnn.keras", "data/calibration.npz", "data/evaluation.npz", "data/train.npz"):
        (folder / name).write_bytes(b"placeholder")
    request = prep_request(load_resolved(folder / "model.yaml"))
    assert request.sample_shape == (32, 32, 1) and request.objective == "fastest" and request.quantization is None
    assert request.pruning is not None and request.pruning["target_sparsity"] >= 0.8
    assert request.fine_tuning_path == str((folder / "data" / "train.npz").resolve())
    names = [c.variant.name for c in candidates(None, None, False, True, False, False, False) if c.eligible]
    assert "pruned-int8" in names and not any(n.startswith("onnx") for n in names)
