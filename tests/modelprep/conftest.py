"""modelprep's fixtures: requests for the digits example, a tiny conv net that trains in seconds,
one prep of every technique on it (shared by the suite's tests), and evaluation data the int8
model gets wrong (to fail the gate)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iac.spec.load import load_resolved
from iac.spec.models import Clustering, Optimize, Pruning, QuantizationAwareTraining
from modelprep.cache import Cache
from modelprep.prep import PrepResult, prep
from modelprep.request import PrepRequest, prep_request

# The same settings in the request below and in the spec the CLI tests write, so the CLI finds
# every variant in the cache the suite filled.
PRUNING = {"target_sparsity": 0.5, "schedule": "polynomial", "begin_step": 0, "frequency": 2, "epochs": 1}
CLUSTERING = {"clusters": 4, "epochs": 1}
QAT = {"epochs": 1}
TINY_SPEC = """\
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


@pytest.fixture(scope="module")
def request_int8(digits_example: Path) -> PrepRequest:
    return prep_request(load_resolved(digits_example / "model.yaml"))


@pytest.fixture(scope="module")
def hard_labels(tmp_path_factory: pytest.TempPathFactory) -> Callable[[PrepRequest], Path]:
    """Evaluation data on which the float model and the int8 artifact disagree: the float
    model's own predictions as labels, on inputs scaled far outside the calibration range."""

    def make(req: PrepRequest) -> Path:
        from modelprep.families.keras.convert import load_model

        with np.load(req.evaluation_path) as data:
            x = np.clip(data["x"] * 6.0 - 2.0, -3.0, 4.0).astype(np.float32)
        labels = np.argmax(np.asarray(load_model(req.model_path)(x)), axis=-1)
        path = tmp_path_factory.mktemp("hard") / "hard.npz"
        np.savez(path, x=x, y=labels)
        return path

    return make


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
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=6, batch_size=64, verbose=0)
    model.save(folder / "model" / "tiny.keras")
    np.savez(folder / "data" / "calibration.npz", x=x_train[:100])
    np.savez(folder / "data" / "evaluation.npz", x=x_eval[:200], y=y_eval[:200])
    np.savez(folder / "data" / "train.npz", x=x_train[:400], y=y_train[:400])
    (folder / "model.yaml").write_text(TINY_SPEC)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("suite-cache")


def _requests(folder: Path) -> Callable[..., PrepRequest]:
    """The tiny model's request with every technique, and any field changed (`optimize` as a dict
    of the optimize fields that change)."""
    base = PrepRequest(
        model_path=str(folder / "model" / "tiny.keras"),
        calibration_path=str(folder / "data" / "calibration.npz"),
        evaluation_path=str(folder / "data" / "evaluation.npz"),
        fine_tuning_path=str(folder / "data" / "train.npz"),
        input_name="image",
        sample_shape=(8, 8, 1),
        optimize=Optimize(
            max_accuracy_drop=0.05,
            pruning=Pruning(**PRUNING),
            clustering=Clustering(**CLUSTERING),
            qat=QuantizationAwareTraining(**QAT),
        ),
        all_variants=True,
        latency_budget_s=0.02,
    )

    def make(**changes: Any) -> PrepRequest:
        return base.changed(**changes)

    return make


@pytest.fixture(scope="module")
def tiny_request(tiny: Path) -> Callable[..., PrepRequest]:
    """Requests for the trained tiny model."""
    return _requests(tiny)


@pytest.fixture
def paper_request(tmp_path: Path) -> Callable[..., PrepRequest]:
    """Requests like the tiny model's over placeholder files: keys and validation, no TensorFlow."""
    for name in ("model/tiny.keras", "data/calibration.npz", "data/evaluation.npz", "data/train.npz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    return _requests(tmp_path)


@pytest.fixture(scope="module")
def suite(tiny_request: Callable[..., PrepRequest], cache_dir: Path) -> dict[str, Any]:
    steps: list[tuple[str, int, int]] = []
    result: PrepResult = prep(tiny_request(), Cache(cache_dir), step=lambda *s: steps.append(s))
    return {"result": result, "steps": steps}
