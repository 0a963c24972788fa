"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``) beside the HTTP API.

It runs on grpc.aio in the server's own process and event loop, so it shares everything the
HTTP routes share: the model state (readiness, metadata), the batcher (gRPC and HTTP requests
batch together), the metrics, the access log and the API key rule (metadata ``authorization:
Bearer <key>`` or ``x-api-key: <key>``; ServerLive and ServerReady are open like the HTTP health
routes). grpc.aio measured faster than the synchronous grpcio server with a thread pool, whose
worker threads must hand each request to the loop's batcher and wait for it (docs/serving.md).

ModelInfer takes the input as ``raw_input_contents`` (the tensor's little-endian bytes) or as
typed ``contents``; the output goes back as ``raw_output_contents``. Client errors are
INVALID_ARGUMENT (bad tensor), NOT_FOUND (model or version), UNAUTHENTICATED (key),
UNAVAILABLE (still loading or draining), RESOURCE_EXHAUSTED (message over ``max_body_bytes``);
each message names the field and the fix, like the HTTP API's 4xx bodies. Metrics count gRPC
calls under ``grpc_*`` route kinds with the HTTP status a call's code corresponds to.
"""

from __future__ import annotations

import hmac
import json
import math
import time
import traceback
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import numpy as np

from serving.bytes_tensors import TensorDataError
from serving.logs import log_event, timestamp, write_line
from serving.proto import grpc_service_pb2 as pb
from serving.proto import grpc_service_pb2_grpc as pb_grpc
from serving.v2_binary import DATATYPES, RAW_DTYPES, tensor_from_bytes, tensor_to_bytes

if TYPE_CHECKING:
    from serving.batching import Batcher
    from serving.config import ServingConfig
    from serving.metrics import Metrics

__all__ = ["GrpcFrontEnd", "InferenceService", "cast_to_input"]

OUTPUT_NAME = "output_0"
_SERVICE = "/inference.GRPCInferenceService/"
# The gRPC code a client error maps to, and the HTTP status the metrics and log count it as.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.CANCELLED: 499,
}
# Typed contents field for each datatype (the protocol carries narrow integers in wide fields).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
_V2_DATATYPE = {
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "int8": "INT8", "int16": "INT16",
    "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
    "uint64": "UINT64", "bool": "BOOL",
}


class State(Protocol):
    """What the service reads from the server's model state (``serving.server.ModelState``)."""

    config: ServingConfig
    api_key: bytes | None
    ready: bool
    batcher: Batcher | None
    metrics: Metrics
    v2_metadata_body: bytes  # the HTTP API's V2 model metadata document, set when ready


class _CallError(Exception):
    """A client error: the gRPC status code and its message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def cast_to_input(array: np.ndarray, target_dtype: str, name: str, where: str) -> np.ndarray:
    """Convert a decoded tensor to the model input's dtype; values that do not survive are an error."""
    target = np.dtype(target_dtype)
    if array.dtype == object:
        raise TensorDataError(
            f'{where}: input "{name}" takes {_V2_DATATYPE.get(target.name, target.name)} numbers, '
            "not BYTES"
        )
    if target.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            batch = array.astype(target)
        if not np.isfinite(batch).all():
            raise TensorDataError(
                f'{where}: input "{name}" has non-finite values (NaN, Infinity or outside the '
                f"{target.name} range); send finite numbers"
            )
        return batch
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.trunc(array)).all()):
        raise TensorDataError(f'{where}: input "{name}" takes integers ({target.name})')
    info = np.iinfo(target)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise TensorDataError(
            f'{where}: input "{name}" takes {target.name} values in {info.min}..{info.max}'
        )
    return array.astype(target)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The six RPCs, answered from the shared model state; every handler runs on the loop."""

    def __init__(self, state: State, server_version: str) -> None:
        self.state = state
        self._server_metadata = pb.ServerMetadataResponse(
            name="modelstack", version=server_version, extensions=["binary_tensor_data"]
        )

    # -- the RPCs --

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return await self._call("grpc_live", context, lambda: pb.ServerLiveResponse(live=True), open_=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return await self._call(
            "grpc_ready", context, lambda: pb.ServerReadyResponse(ready=self.state.ready), open_=True
        )

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        def answer() -> pb.ModelReadyResponse:
            self._check_model(request.name, request.version)
            return pb.ModelReadyResponse(ready=self.state.ready)

        return await self._call("grpc_model_ready", context, answer)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return await self._call("grpc_server", context, lambda: self._server_metadata)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        def answer() -> pb.ModelMetadataResponse:
            self._check_model(request.name, request.version)
            return _metadata_message(json.loads(self._ready().v2_metadata_body))

        return await self._call("grpc_model", context, answer)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        started = time.perf_counter()
        route = "grpc_infer"
        try:
            self._check_key(context)
            self._check_model(request.model_name, request.model_version)
            state = self._ready()
            batch = self._input(request, state.config)
            assert state.batcher is not None
            outputs = await state.batcher.infer(batch)
            response = self._response(request, outputs)
        except _CallError as exc:
            self._record(route, exc.code, started, context)
            await context.abort(exc.code, exc.message)
        except Exception:
            log_event(event="internal_error", method="gRPC", path=_SERVICE + "ModelInfer",
                      error=traceback.format_exc())
            self._record(route, grpc.StatusCode.INTERNAL, started, context)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")
        self._record(route, grpc.StatusCode.OK, started, context)
        return response

    # -- helpers --

    async def _call(self, route: str, context: Any, answer: Any, open_: bool = False) -> Any:
        """Run a quick RPC: key check (unless open), answer, metrics and access log."""
        started = time.perf_counter()
        try:
            if not open_:
                self._check_key(context)
            response = answer()
        except _CallError as exc:
            self._record(route, exc.code, started, context)
            await context.abort(exc.code, exc.message)
        self._record(route, grpc.StatusCode.OK, started, context)
        return response

    def _record(self, route: str, code: grpc.StatusCode, started: float, context: Any) -> None:
        elapsed = time.perf_counter() - started
        status = _HTTP_STATUS.get(code, 500)
        self.state.metrics.request(route, status, elapsed)
        write_line(
            f'{{"ts":"{timestamp()}","event":"request","method":"gRPC",'
            f'"path":"{_SERVICE}{_METHOD_OF_ROUTE[route]}","status":{status},'
            f'"grpc_code":"{code.name}","duration_ms":{elapsed * 1000:.3f},'
            f'"remote":{json.dumps(context.peer())}}}'
        )

    def _check_key(self, context: Any) -> None:
        expected = self.state.api_key
        if expected is None:
            return
        sent = ""
        authorization = ""
        for key, value in context.invocation_metadata() or ():
            if key == "x-api-key" and not sent:
                sent = value if isinstance(value, str) else value.decode("latin-1")
            elif key == "authorization" and not authorization:
                authorization = value if isinstance(value, str) else value.decode("latin-1")
        if not sent and authorization:
            scheme, _, credentials = authorization.partition(" ")
            sent = credentials.strip() if scheme.lower() == "bearer" else ""
        # compare_digest: the time taken does not depend on where the first difference is.
        if not sent or not hmac.compare_digest(sent.encode("latin-1", "replace"), expected):
            raise _CallError(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong API key; send it as metadata 'authorization: Bearer <key>' or "
                "'x-api-key: <key>'",
            )

    def _check_model(self, name: str, version: str) -> None:
        served = self.state.config.model_name
        if name != served:
            raise _CallError(
                grpc.StatusCode.NOT_FOUND,
                f"model {json.dumps(name)} is not served here; this server serves {json.dumps(served)}",
            )
        if version not in ("", "1"):
            raise _CallError(
                grpc.StatusCode.NOT_FOUND,
                f"model {json.dumps(name)} has no version {json.dumps(version)}; the only version is 1",
            )

    def _ready(self) -> State:
        state = self.state
        if not state.ready:
            raise _CallError(
                grpc.StatusCode.UNAVAILABLE,
                f"model {json.dumps(state.config.model_name)} is still loading; retry when "
                "ServerReady answers ready",
            )
        return state

    def _input(self, request: pb.ModelInferRequest, config: ServingConfig) -> np.ndarray:
        """The request's one input tensor, checked and converted to the model's input dtype."""
        spec = config.input
        bad = grpc.StatusCode.INVALID_ARGUMENT
        if len(request.inputs) != 1:
            raise _CallError(
                bad, f'inputs: must hold exactly one tensor named "{spec.name}", got {len(request.inputs)}'
            )
        for i, output in enumerate(request.outputs):
            if output.name != OUTPUT_NAME:
                raise _CallError(
                    bad, f'outputs[{i}].name: the model has one output, "{OUTPUT_NAME}", got {json.dumps(output.name)}'
                )
        tensor = request.inputs[0]
        where = "inputs[0]"
        if tensor.name != spec.name:
            raise _CallError(bad, f'{where}.name: this model\'s input is "{spec.name}", got {json.dumps(tensor.name)}')
        shape = list(tensor.shape)
        expected = [-1, *spec.shape]
        if len(shape) != len(expected) or shape[0] < 1 or shape[1:] != list(spec.shape):
            raise _CallError(
                bad,
                f'{where}.shape: input "{spec.name}" takes shape {expected} (batch first, at least 1), got {shape}',
            )
        numeric = [d for d in DATATYPES if d not in ("BYTES", "BOOL")]
        if tensor.datatype not in numeric:
            raise _CallError(
                bad,
                f'{where}.datatype: input "{spec.name}" takes {_V2_DATATYPE[spec.dtype]} (or another '
                f"numeric type: {', '.join(numeric)}), got {json.dumps(tensor.datatype)}",
            )
        try:
            if request.raw_input_contents:
                if len(request.raw_input_contents) != 1:
                    raise TensorDataError(
                        f"raw_input_contents: one entry per input is needed (1), got "
                        f"{len(request.raw_input_contents)}"
                    )
                if tensor.HasField("contents"):
                    raise TensorDataError(
                        f"{where}.contents: give the tensor either as raw_input_contents or as "
                        "typed contents, not both"
                    )
                array = tensor_from_bytes(request.raw_input_contents[0], tensor.datatype, shape, where)
            else:
                array = _from_contents(tensor, shape, where)
            return cast_to_input(array, spec.dtype, spec.name, where)
        except TensorDataError as exc:
            raise _CallError(bad, str(exc)) from None

    def _response(self, request: pb.ModelInferRequest, outputs: np.ndarray) -> pb.ModelInferResponse:
        if outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
            raise ValueError("the model produced NaN or infinite outputs")
        datatype = _V2_DATATYPE.get(outputs.dtype.name, outputs.dtype.name.upper())
        return pb.ModelInferResponse(
            model_name=self.state.config.model_name,
            model_version="1",
            id=request.id,
            outputs=[pb.ModelInferResponse.InferOutputTensor(
                name=OUTPUT_NAME, datatype=datatype, shape=outputs.shape
            )],
            raw_output_contents=[tensor_to_bytes(outputs)],
        )


_METHOD_OF_ROUTE = {
    "grpc_live": "ServerLive", "grpc_ready": "ServerReady", "grpc_model_ready": "ModelReady",
    "grpc_server": "ServerMetadata", "grpc_model": "ModelMetadata", "grpc_infer": "ModelInfer",
}


def _from_contents(tensor: Any, shape: list[int], where: str) -> np.ndarray:
    """A tensor from typed ``contents``: the datatype's field must hold exactly the elements."""
    datatype = tensor.datatype
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise TensorDataError(
            f"{where}.contents: {datatype} has no typed contents field; send it as raw_input_contents"
        )
    contents = tensor.contents
    for other in set(_CONTENTS_FIELD.values()) - {field}:
        if len(getattr(contents, other)):
            raise TensorDataError(
                f"{where}.contents.{other}: a {datatype} tensor's elements go in {field}"
            )
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise TensorDataError(
            f"{where}.contents.{field}: shape {shape} needs {count} element(s), got {len(values)}"
        )
    dtype = RAW_DTYPES[datatype]
    wide = np.asarray(values)  # int32/int64/uint32/uint64/float32/float64 as sent
    if wide.size and dtype.kind in "iu" and wide.dtype != dtype:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise TensorDataError(
                f"{where}.contents.{field}: {datatype} takes values in {info.min}..{info.max}"
            )
    return wide.astype(dtype.newbyteorder("=")).reshape(shape)


def _metadata_message(document: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The V2 model metadata document (the HTTP API's) as its gRPC message."""
    def tensors(items: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            for t in items
        ]

    return pb.ModelMetadataResponse(
        name=document["name"], versions=document["versions"], platform=document["platform"],
        inputs=tensors(document["inputs"]), outputs=tensors(document["outputs"]),
    )


class GrpcFrontEnd:
    """The grpc.aio server on the running loop: bind, serve, drain."""

    def __init__(self, state: State, host: str, port: int, server_version: str) -> None:
        self.state = state
        self.host = host
        self.requested_port = port
        self.port = 0
        self._server_version = server_version
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and start serving; return the bound port (OSError when it cannot bind)."""
        limit = self.state.config.max_body_bytes
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),  # a taken port is an error, as for the HTTP socket
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
        ])
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(self.state, self._server_version), server
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            port = server.add_insecure_port(f"{host}:{self.requested_port}")
        except RuntimeError as exc:  # grpcio raises when the address cannot be bound
            raise OSError(f"cannot bind gRPC to {host}:{self.requested_port}: {exc}") from None
        if port == 0:
            raise OSError(f"cannot bind gRPC to {host}:{self.requested_port}")
        await server.start()
        self._server, self.port = server, port
        return port

    async def stop(self, grace: float) -> None:
        """Refuse new calls and give the ones in flight up to ``grace`` seconds to finish."""
        if self._server is not None:
            await self._server.stop(grace)
