"""modelprep on the recommender example: two named integer inputs (user id, item id -> score), metric mae."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from iac.spec.errors import UserError
from iac.spec.load import load_resolved
from modelprep.cache import Cache
from modelprep.families import family
from modelprep.families.keras.data import load_npz_inputs
from modelprep.prep import prep
from modelprep.request import PrepRequest, prep_key, prep_request

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "modelprep" / "examples" / "specs" / "recommender.yaml"
INPUTS = (("user_id", (1,), "int32"), ("item_id", (1,), "int32"))


@pytest.fixture(scope="module")
def recommender(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example trained briefly, with its spec as shipped."""
    from modelprep.examples.recommender import train

    folder = tmp_path_factory.mktemp("recommender")
    train(folder, epochs=6)
    shutil.copy(SPEC, folder / "model.yaml")
    return folder


def _paper(tmp_path: Path, **optimize: object) -> PrepRequest:
    for name in ("model.keras", "calibration.npz", "evaluation.npz"):
        (tmp_path / name).write_bytes(name.encode())
    return PrepRequest(
        model_path=str(tmp_path / "model.keras"),
        calibration_path=str(tmp_path / "calibration.npz"),
        evaluation_path=str(tmp_path / "evaluation.npz"),
        input_name="user_id",
        sample_shape=(1,),
        inputs=INPUTS,
    ).changed(optimize=optimize)


@pytest.mark.parametrize("variants", [["litert-int8-io"], ["litert-float32", "qat-int8"], ["pruned-float32"]])
def test_variants_that_would_quantize_ids_or_fine_tune_are_refused(tmp_path: Path, variants: list[str]) -> None:
    with pytest.raises(UserError, match="several inputs") as caught:
        family("keras").candidates(_paper(tmp_path, variants=variants))
    assert caught.value.problems[0].path == "optimize.variants"


def test_int8_io_is_refused_at_its_field(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="litert-int8-io") as caught:
        family("keras").candidates(_paper(tmp_path, int8_io=True))
    assert caught.value.problems[0].path == "optimize.int8_io"


def test_post_training_variants_keep_ids_integer(tmp_path: Path) -> None:
    names = [c.variant.name for c in family("keras").candidates(_paper(tmp_path))]
    assert "litert-int8" in names and "litert-int8-io" not in names


def test_single_input_keys_do_not_change_with_the_inputs_field(tmp_path: Path) -> None:
    several = _paper(tmp_path)
    single = several.changed(inputs=None)
    assert prep_key(single) != prep_key(several)
    assert "inputs" not in single.model_dump(exclude_none=True)


def test_data_files_hold_one_array_per_input(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, user_id=np.arange(4, dtype=np.int32)[:, None], item_id=np.arange(4)[:, None], y=np.ones(4))
    data = load_npz_inputs(path, "data.evaluation", INPUTS, need_labels=True, labels="value")
    assert data.x.dtype.names == ("user_id", "item_id") and data.x["item_id"].dtype == np.int32
    np.savez(path, user_id=np.zeros((4, 1), np.float32), item_id=np.arange(4)[:, None])
    with pytest.raises(UserError, match="'user_id' has dtype float32, but the input takes integers"):
        load_npz_inputs(path, "data.calibration", INPUTS, need_labels=False)
    np.savez(path, user_id=np.zeros((4, 1), np.int32))
    with pytest.raises(UserError, match="has no array 'item_id'"):
        load_npz_inputs(path, "data.calibration", INPUTS, need_labels=False)


@pytest.mark.tf
def test_prep_of_the_recommender(recommender: Path, tmp_path: Path) -> None:
    from serving.config import InputSpec
    from serving.feeds import pack
    from serving.onnx_runtime import OnnxModel
    from serving.runtime import LiteRTModel

    req = prep_request(load_resolved(recommender / "model.yaml"))
    assert req.inputs == INPUTS
    req = req.changed(
        optimize={"variants": ["litert-float32", "litert-dynamic", "litert-int8", "onnx-float32"]},
        latency_budget_s=0.02,
    )
    result = prep(req, Cache(tmp_path))
    report = result.report
    names = {m.name for m in report.variants}
    assert names == {"litert-float32", "litert-dynamic", "litert-int8", "onnx-float32"}, report
    for measure in report.variants:
        assert abs(measure.accuracy - report.baseline_accuracy) < 0.05, measure  # mae, as Keras scores it
    onnx = next(m for m in report.variants if m.name == "onnx-float32")
    assert abs(onnx.accuracy - report.baseline_accuracy) < 1e-4
    # The chosen artifact serves by input name, as the server runs it.
    specs = [InputSpec(name, shape, dtype) for name, shape, dtype in INPUTS]
    with np.load(recommender / "data" / "evaluation.npz") as data:
        batch = pack(specs, {"user_id": data["user_id"][:16], "item_id": data["item_id"][:16]})
        labels = data["y"][:16]
    content = result.artifact_path.read_bytes()
    runtime = (OnnxModel if result.artifact_path.suffix == ".onnx" else LiteRTModel).from_bytes(content, inputs=specs)
    outputs = runtime.predict(batch)
    assert outputs.shape == (16, 1) and float(np.abs(outputs - labels).mean()) < 1.0
    # The ids each embedding accepts, read from the model at prep, kept in the signature and
    # handed to the server, which refuses an id outside them alone (400 naming input and range).
    assert {t.name: t.range for t in report.inputs} == {"user_id": [0, 199], "item_id": [0, 299]}
    from iac.build.render import serving_config

    served = serving_config(load_resolved(recommender / "model.yaml"), report)
    assert {i["name"]: i.get("range") for i in served["inputs"]} == {"user_id": [0, 199], "item_id": [0, 299]}
    from serving.config import ServingConfig

    config = ServingConfig.from_dict({**served, "artifact": str(result.artifact_path)})
    assert {i.name: i.range for i in config.inputs} == {"user_id": (0, 199), "item_id": (0, 299)}
