"""The ``predict`` serving family: one forward pass over tensors or texts (Keras, Hugging Face encoders).

Its routes are TF Serving's REST API (``serving.v1``) and the Open Inference Protocol V2
(``serving.v2``, and its gRPC service on ``grpc_port``); every transport decodes into one
``serving.request.InferRequest``, bound to the model's inputs (one or several) in one step. The model is loaded, checked against the
config and warmed up by ``serving.loading``, and served behind the dynamic batcher
(``serving.batched``). ``python -m serving.predict`` prints its route table as docs/serving.md shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from serving import v1, v2
from serving.batched import BatchedModel
from serving.config import RUNTIMES, ServingConfig
from serving.errors import show
from serving.routes import GET, POST, Route, docs_table

if TYPE_CHECKING:
    from serving.grpc_service import GrpcFrontEnd
    from serving.state import ModelState

ROUTES: tuple[Route, ...] = (
    Route(
        "v1_status",
        GET,
        "/v1/models/<name>",
        v1.model_status,
        "TF Serving model status: `AVAILABLE` (or `LOADING` before the model is warmed up)",
    ),
    Route(
        "v1_metadata",
        GET,
        "/v1/models/<name>/metadata",
        v1.model_metadata,
        "TF Serving signature (`serving_default`) + the prep report under `metadata.modelstack`",
    ),
    Route(
        "v1_predict",
        POST,
        "/v1/models/<name>:predict",
        v1.predict,
        'row form `{"instances": [...]}` → `{"predictions": [...]}`; columnar form `{"inputs": ...}` '
        '→ `{"outputs": [...]}`; instances may be `{"<input>": sample}` objects',
    ),
    Route("v2_server", GET, "/v2", v2.server_info, "Open Inference Protocol (KServe V2) server metadata"),
    Route("v2_live", GET, "/v2/health/live", v2.server_live, '`{"live": true}`', open=True),
    Route(
        "v2_ready",
        GET,
        "/v2/health/ready",
        v2.server_ready,
        '`{"ready": true}`; 503 `{"ready": false}` while loading',
        open=True,
    ),
    Route(
        "v2_model",
        GET,
        "/v2/models/<name>",
        v2.model_metadata,
        "V2 model metadata: `name`, `versions`, `platform` (`tensorflow_lite` / `onnxruntime_onnx`), "
        "`inputs`, `outputs` (`output_0`)",
    ),
    Route(
        "v2_model_ready",
        GET,
        "/v2/models/<name>/ready",
        v2.model_ready,
        '`{"name": ..., "ready": true}`; 503 while loading',
    ),
    Route(
        "v2_infer",
        POST,
        "/v2/models/<name>/infer",
        v2.infer,
        '`{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "data", "parameters"?}], '
        '"outputs"?: [{"name": "output_0"}]}` → `{"model_name", "model_version", "id"?, '
        '"outputs": [{"name", "shape", "datatype", "data"}]}`; or binary tensor data after a JSON header '
        "(`Inference-Header-Content-Length`, below)",
    ),
)


def routes(config: ServingConfig) -> tuple[Route, ...]:
    """V1 and V2 routes: one set for every model, whatever its inputs (``serving.request``)."""
    return ROUTES


def load(config: ServingConfig) -> BatchedModel:
    """The runtime for the artifact, checked against the config and warmed up."""
    from serving.loading import load_model

    runtime, warm_up_ms, sample_cost_s = load_model(config)
    return BatchedModel(runtime, config, warm_up_ms, sample_cost_s)


def check(data: Mapping[str, Any]) -> list[str]:
    """A predict model needs its inputs described (``serving.config`` checks what they say; other
    families take none) and runs on LiteRT or ONNX Runtime (other families name their own)."""
    problems = []
    if "inputs" not in data:
        problems.append("inputs: required field is missing")
    elif data["inputs"] == []:
        problems.append("inputs: must list at least one input, got an empty list")
    runtime = data.get("runtime", "auto")
    if runtime not in RUNTIMES:
        problems.append(f"runtime: must be one of {', '.join(RUNTIMES)}, got {show(runtime)}")
    return problems


def grpc_front(state: ModelState, host: str, port: int) -> GrpcFrontEnd:
    """The V2 gRPC service (same loop, state and batcher as HTTP)."""
    # the gRPC transport loads only when gRPC is on
    from serving.grpc_service import GrpcFrontEnd

    return GrpcFrontEnd(state, host, port)


if __name__ == "__main__":
    print(docs_table(ROUTES), end="")
