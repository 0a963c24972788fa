"""The standard Open Inference Protocol clients, in their defaults, against `modelstack serve` with its defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from v2_fixtures import V2Server


@pytest.mark.tf
def test_tritonclient_http_and_grpc_defaults_against_modelstack_serve(digits_example: Path) -> None:
    # --port 0: any free port, and gRPC (on by default) takes a free port too.
    argv = [sys.executable, "-m", "iac.cli.app", "serve", str(digits_example / "model.yaml"), "--port", "0"]
    server = V2Server(None, None, argv=argv)
    try:
        server.wait_for("ready", timeout=240)
        assert server.port and server.grpc_port
        with np.load(digits_example / "data" / "evaluation.npz") as data:
            batch = data["x"][:3].astype(np.float32)

        http = httpclient.InferenceServerClient(server.http_url)
        inputs = [httpclient.InferInput("pixels", [3, 64], "FP32")]
        inputs[0].set_data_from_numpy(batch)  # binary tensor data, binary output: the client's defaults
        from_http = http.infer("digits", inputs).as_numpy("output_0")

        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        assert grpc.is_server_ready() and grpc.is_model_ready("digits")
        inputs = [grpcclient.InferInput("pixels", [3, 64], "FP32")]
        inputs[0].set_data_from_numpy(batch)
        from_grpc = grpc.infer("digits", inputs).as_numpy("output_0")

        assert from_http.shape == (3, 10)
        np.testing.assert_allclose(from_grpc, from_http, rtol=1e-6)
    finally:
        assert server.stop() == 0
