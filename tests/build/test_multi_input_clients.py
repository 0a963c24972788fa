"""The clients the deploy stage and the CLI send to a model with one input or several: the replica
warm-up and the bench bodies name each input and decode on the server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from iac.deploy.targets.docker.replicas import warm_up_body
from iac.loadgen import bench_plan
from serving.config import InputSpec
from serving.v1 import decode_predict_request as decode_predict
from serving.v2 import decode_infer

REPO = Path(__file__).resolve().parents[2]
INPUTS = [InputSpec("user_id", (1,), "int32"), InputSpec("item_id", (1,), "int32")]


def test_warm_up_body_takes_integers_for_integer_inputs() -> None:
    body = warm_up_body([["user_id", [1], "int32"], ["item_id", [1], "int32"]])
    batch, rows = decode_predict(json.dumps(body).encode(), INPUTS)
    assert rows and batch["user_id"].tolist() == [[0]]
    one = InputSpec("pixels", (2,), "float32")  # one input: the same named row
    batch, rows = decode_predict(json.dumps(warm_up_body([["pixels", [2], "float32"]])).encode(), [one])
    assert rows and batch.tolist() == [[0.0, 0.0]]


def test_bench_bodies_name_each_input(tmp_path: Path) -> None:
    shutil.copy(REPO / "modelprep" / "examples" / "specs" / "recommender.yaml", tmp_path / "model.yaml")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "recommender.keras").write_bytes(b"placeholder")
    (tmp_path / "data").mkdir()
    ids = np.arange(5, dtype=np.int32)[:, None]
    np.savez(tmp_path / "data" / "calibration.npz", user_id=ids, item_id=ids)
    np.savez(tmp_path / "data" / "evaluation.npz", user_id=ids, item_id=ids + 1, y=np.ones((5, 1), np.float32))
    v1 = bench_plan("http://127.0.0.1:8521", tmp_path / "model.yaml", None, "v1")
    assert v1.target.endswith("/v1/models/recommender:predict") and len(v1.bodies) == 5
    batch, _ = decode_predict(v1.bodies[2], INPUTS)
    assert batch["item_id"].tolist() == [[3]]
    v2 = bench_plan("http://127.0.0.1:8521", tmp_path / "model.yaml", None, "v2")
    batch, _, _ = decode_infer(v2.bodies[4], INPUTS)
    assert batch["user_id"].tolist() == [[4]] and batch["item_id"].tolist() == [[5]]


def test_bench_bodies_of_a_one_input_model_read_x(tmp_path: Path) -> None:
    shutil.copy(REPO / "modelprep" / "examples" / "specs" / "digits.yaml", tmp_path / "model.yaml")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "digits.keras").write_bytes(b"placeholder")
    (tmp_path / "data").mkdir()
    x = np.arange(3 * 64, dtype=np.float32).reshape(3, 64)
    np.savez(tmp_path / "data" / "calibration.npz", x=x)
    np.savez(tmp_path / "data" / "evaluation.npz", x=x, y=np.zeros(3, np.int64))
    spec = InputSpec("pixels", (64,), "float32")
    v1 = bench_plan("http://127.0.0.1:8501", tmp_path / "model.yaml", None, "v1")
    assert len(v1.bodies) == 3
    batch, _ = decode_predict(v1.bodies[1], [spec])
    assert batch.tolist() == [x[1].tolist()]
    v2 = bench_plan("http://127.0.0.1:8501", tmp_path / "model.yaml", None, "v2")
    batch, _, _ = decode_infer(v2.bodies[2], [spec])
    assert batch.tolist() == [x[2].tolist()]
