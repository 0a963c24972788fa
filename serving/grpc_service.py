"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``) beside the HTTP API.

It runs on grpc.aio in the server's own process and event loop, so it shares everything the
HTTP routes share: the model state (readiness, metadata), the batcher (gRPC and HTTP requests
batch together), the metrics, the access log and the API key rule (metadata ``authorization:
Bearer <key>`` or ``x-api-key: <key>``; ServerLive and ServerReady are open like the HTTP health
routes). grpc.aio cost less CPU per call than the synchronous grpcio server with a thread pool,
whose worker threads must hand each call to the loop's batcher and wait for it, in every round
of benchmarks/v2_bench.py (docs/serving.md).

ModelInfer takes the input as ``raw_input_contents`` (the tensor's little-endian bytes) or as
typed ``contents`` (a text model's as BYTES, checked by ``serving.text``); the output goes back
as ``raw_output_contents``. Client errors are INVALID_ARGUMENT (bad tensor), NOT_FOUND (model or
version), UNAUTHENTICATED (key), UNAVAILABLE (still loading or draining), RESOURCE_EXHAUSTED
(message over ``max_body_bytes``, or more than ``max_connections`` calls in progress); each
message names the field and the fix, like the HTTP API's 4xx bodies. Metrics count gRPC
calls under ``grpc_*`` route kinds with the HTTP status a call's code corresponds to.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from serving import v2
from serving.auth import check_api_key
from serving.bytes_tensors import TensorDataError, split_bytes
from serving.errors import ClientError
from serving.logs import log_event, write_request
from serving.messages import Headers
from serving.proto import grpc_service_pb2 as pb
from serving.proto import grpc_service_pb2_grpc as pb_grpc
from serving.state import SERVER_VERSION
from serving.tensors import cast, check_finite_outputs
from serving.v2_binary import RAW_DTYPES, tensor_from_bytes, tensor_to_bytes

if TYPE_CHECKING:
    from serving.state import ModelState

__all__ = ["GrpcFrontEnd", "InferenceService"]

_SERVICE = "/inference.GRPCInferenceService/"
# The gRPC code for each client error status, and back: the HTTP status metrics and log count.
_CODE_OF_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
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
# Output datatype by numpy dtype (a dict lookup: ``dtype.name`` costs more on every call).
_DATATYPE_OF = {np.dtype(name): datatype for name, datatype in v2.V2_DATATYPES.items()}
_WRONG_KEY = (
    "missing or wrong API key; send it as metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'"
)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The six RPCs, answered from the shared model state; every handler runs on the loop."""

    def __init__(self, state: ModelState) -> None:
        self.state = state
        document = v2.server_metadata(SERVER_VERSION)
        self._server_metadata = pb.ServerMetadataResponse(
            name=document["name"], version=document["version"], extensions=document["extensions"]
        )
        self._model_metadata: pb.ModelMetadataResponse | None = None
        self._response_heads: dict[tuple[np.dtype, tuple[int, ...]], bytes] = {}

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
            self.state.require_ready()
            if self._model_metadata is None:
                assert self.state.model is not None
                document = v2.model_metadata_document(self.state.config, self.state.model)
                self._model_metadata = _metadata_message(document)
            return self._model_metadata

        return await self._call("grpc_model", context, answer)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        started = time.perf_counter()
        route = "grpc_infer"
        try:
            if self.state.api_key is not None:
                self._check_key(context)
            self._check_model(request.model_name, request.model_version)
            batcher = self.state.require_ready()
            batch = _input(request, self.state)
            response = self._response(request, await batcher.infer(batch))
        except ClientError as exc:
            code = _CODE_OF_STATUS.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
            self._record(route, code, started, context)
            await context.abort(code, exc.message)
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
        except ClientError as exc:
            code = _CODE_OF_STATUS.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
            self._record(route, code, started, context)
            await context.abort(code, exc.message)
        self._record(route, grpc.StatusCode.OK, started, context)
        return response

    def _record(self, route: str, code: grpc.StatusCode, started: float, context: Any) -> None:
        elapsed = time.perf_counter() - started
        status = _HTTP_STATUS.get(code, 500)
        self.state.metrics.request(route, status, elapsed)
        write_request("gRPC", _PATH_OF_ROUTE[route], status, elapsed, context.peer(), code.name)

    def _check_key(self, context: Any) -> None:
        """The HTTP rule (``serving.auth``) on the call's metadata: ``authorization`` or ``x-api-key``."""
        if self.state.api_key is None:
            return
        headers = Headers()
        for key, value in context.invocation_metadata() or ():
            if key in ("authorization", "x-api-key"):
                headers.add(key, value if isinstance(value, str) else value.decode("latin-1"))
        try:
            check_api_key(headers, self.state.api_key)
        except ClientError:
            raise ClientError(401, _WRONG_KEY) from None

    def _check_model(self, name: str, version: str) -> None:
        served = self.state.config.model_name
        if name != served:
            raise ClientError(
                404, f"model {json.dumps(name)} is not served here; this server serves {json.dumps(served)}"
            )
        if version not in ("", "1"):
            raise ClientError(
                404, f"model {json.dumps(name)} has no version {json.dumps(version)}; the only version is 1"
            )

    def _response(self, request: pb.ModelInferRequest, outputs: np.ndarray) -> pb.ModelInferResponse:
        check_finite_outputs(outputs)
        # Everything but the id and the output's bytes depends only on the output's dtype and
        # shape: serialized once per pair, parsed back per call (cheaper than building it).
        key = (outputs.dtype, outputs.shape)
        head = self._response_heads.get(key)
        if head is None:
            if len(self._response_heads) >= 64:
                self._response_heads.clear()
            datatype = _DATATYPE_OF.get(outputs.dtype) or outputs.dtype.name.upper()
            head = self._response_heads[key] = pb.ModelInferResponse(
                model_name=self.state.config.model_name,
                model_version="1",
                outputs=[pb.ModelInferResponse.InferOutputTensor(
                    name=v2.OUTPUT_NAME, datatype=datatype, shape=outputs.shape
                )],
            ).SerializeToString()
        response = pb.ModelInferResponse.FromString(head)
        request_id = request.id
        if request_id:
            response.id = request_id
        response.raw_output_contents.append(tensor_to_bytes(outputs))
        return response


def _input(request: pb.ModelInferRequest, state: ModelState) -> np.ndarray:
    """The request's one input tensor, checked like the HTTP API's and cast to the model's input dtype."""
    if len(state.config.inputs) > 1:  # several named inputs: one batch of named tensors
        from serving.multi import grpc_batch

        return grpc_batch(request, state.config.inputs, _from_contents)
    spec = state.config.input
    # Each message field is read once: every read of a field builds a new Python object.
    inputs = request.inputs
    if len(inputs) != 1:
        raise ClientError(
            400, f'inputs: must hold exactly one tensor named "{spec.name}", got {len(inputs)}'
        )
    outputs = request.outputs
    if outputs:
        for i, output in enumerate(outputs):
            if output.name != v2.OUTPUT_NAME:
                raise ClientError(
                    400, f'outputs[{i}].name: the model has one output, "{v2.OUTPUT_NAME}", got {json.dumps(output.name)}'
                )
    tensor = inputs[0]
    where = "inputs[0]"
    if spec.dtype == "string":
        return _text_input(request, tensor, spec.name, where)
    shape = list(tensor.shape)
    datatype = tensor.datatype
    v2.check_input_tensor(tensor.name, shape, datatype, spec, where)
    try:
        raw = request.raw_input_contents
        if raw:
            if len(raw) != 1:
                raise TensorDataError(
                    f"raw_input_contents: one entry per input is needed (1), got {len(raw)}"
                )
            if tensor.HasField("contents"):
                raise TensorDataError(
                    f"{where}.contents: give the tensor either as raw_input_contents or as typed "
                    "contents, not both"
                )
            array = tensor_from_bytes(raw[0], datatype, shape, where)
        else:
            array = _from_contents(tensor, shape, where)
    except TensorDataError as exc:
        raise ClientError(400, str(exc)) from None
    return cast(array, spec, where)


def _text_input(request: pb.ModelInferRequest, tensor: Any, name: str, where: str) -> np.ndarray:
    """A text model's input: one BYTES element per sample, checked by the HTTP API's rules (``serving.text``)."""
    from serving.text import v2_text_batch

    elements: list[bytes] = []
    if tensor.datatype == "BYTES":  # any other datatype is refused below, with the HTTP API's message
        try:
            if len(request.raw_input_contents) > 1:
                raise TensorDataError(
                    f"raw_input_contents: one entry per input is needed (1), got {len(request.raw_input_contents)}"
                )
            if request.raw_input_contents:
                elements = split_bytes(request.raw_input_contents[0], where)
            else:
                elements = list(tensor.contents.bytes_contents)
        except TensorDataError as exc:
            raise ClientError(400, str(exc)) from None
    document = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype, "data": elements}
    return v2_text_batch(document, None, False, name, where)


_PATH_OF_ROUTE = {
    route: _SERVICE + method for route, method in (
        ("grpc_live", "ServerLive"), ("grpc_ready", "ServerReady"), ("grpc_model_ready", "ModelReady"),
        ("grpc_server", "ServerMetadata"), ("grpc_model", "ModelMetadata"), ("grpc_infer", "ModelInfer"),
    )
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
                f"{where}.contents.{other}: {datatype} elements go in {field}"
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

    def __init__(self, state: ModelState, host: str, port: int) -> None:
        self.state = state
        self.host = host
        self.requested_port = port
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and start serving; return the bound port (OSError when it cannot bind)."""
        config = self.state.config
        server = grpc.aio.server(
            # The HTTP front end's bounds, in gRPC's terms: calls in progress at once (more get
            # RESOURCE_EXHAUSTED), the message size, idle connections closed (clients reconnect).
            maximum_concurrent_rpcs=config.max_connections,
            options=[
                ("grpc.so_reuseport", 0),  # a taken port is an error, as for the HTTP socket
                ("grpc.max_receive_message_length", config.max_body_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.max_connection_idle_ms", int(config.idle_timeout_s * 1000)),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(self.state), server)
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
