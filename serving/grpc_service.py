"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``) beside the HTTP API.

The transport is tonic (Rust; ``native/grpc_front``, the Python module ``modelstack_grpc``) on
its own threads: HTTP/2, gRPC framing and the call bounds cost a few microseconds there and none
of the GIL. What the protocol means is here, on the server's event loop, so gRPC shares
everything the HTTP routes share: the model state (readiness, metadata), the batcher (gRPC and
HTTP requests batch together), the metrics, the access log and the API key rule (metadata
``authorization: Bearer <key>`` or ``x-api-key: <key>``; ServerLive and ServerReady are open like
the HTTP health routes). The loop takes the waiting calls in bulk when the transport's eventfd
becomes readable, parses each message with protobuf and answers it with serialized bytes or a
status. grpc.aio, the best Python gRPC server, cost ~0.3 ms of CPU per call on its own; the
V2 benchmark keeps it as a variant (benchmarks/v2_bench.py, docs/serving.md).

ModelInfer takes the input as ``raw_input_contents`` (the tensor's little-endian bytes) or as
typed ``contents`` (a text model's as BYTES, checked by ``serving.text``); the output goes back
as ``raw_output_contents``. Client errors are INVALID_ARGUMENT (bad tensor or message), NOT_FOUND
(model or version), UNAUTHENTICATED (key), UNAVAILABLE (still loading or draining),
RESOURCE_EXHAUSTED (message over ``max_body_bytes``, or more than ``max_connections`` calls in
progress); each message names the field and the fix, like the HTTP API's 4xx bodies. Metrics
count gRPC calls under ``grpc_*`` route kinds with the HTTP status a call's code corresponds to.
"""

from __future__ import annotations

import asyncio
import math
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf.message import DecodeError

from serving import v2
from serving.auth import check_api_key
from serving.batched import batched
from serving.bytes_tensors import TensorDataError, split_bytes
from serving.errors import ClientError, cut
from serving.logs import log_event, write_request
from serving.messages import Headers
from serving.proto import grpc_service_pb2 as pb
from serving.request import InferInput, InferRequest, bind
from serving.routes import check_model
from serving.state import SERVER_VERSION
from serving.tensors import V2_DATATYPES, check_finite_outputs
from serving.v2_binary import RAW_DTYPES, tensor_to_bytes

if TYPE_CHECKING:
    from serving.state import ModelState

__all__ = ["GrpcFrontEnd", "InferenceService", "metadata_message"]

_SERVICE = "/inference.GRPCInferenceService/"
# gRPC status codes (their numbers on the wire) and names, for answers and the access log.
OK, CANCELLED, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = (
    0,
    1,
    3,
    5,
    8,
    13,
    14,
    16,
)
CODE_NAMES = {
    OK: "OK",
    CANCELLED: "CANCELLED",
    INVALID_ARGUMENT: "INVALID_ARGUMENT",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    INTERNAL: "INTERNAL",
    UNAVAILABLE: "UNAVAILABLE",
    UNAUTHENTICATED: "UNAUTHENTICATED",
}
# The gRPC code for each client error status, and back: the HTTP status metrics and log count.
MAX_STATUS_MESSAGE = 1024  # characters of a status message: client strings in it never grow a header
_CODE_OF_STATUS = {
    400: INVALID_ARGUMENT,
    401: UNAUTHENTICATED,
    404: NOT_FOUND,
    413: RESOURCE_EXHAUSTED,
    503: UNAVAILABLE,
}
CANCELLED_SUMMARY_S = 1.0  # cancelled calls are summed in one log line this often

_HTTP_STATUS = {
    OK: 200,
    INVALID_ARGUMENT: 400,
    UNAUTHENTICATED: 401,
    NOT_FOUND: 404,
    RESOURCE_EXHAUSTED: 413,
    UNAVAILABLE: 503,
    INTERNAL: 500,
    CANCELLED: 499,
}
# What a call's answer goes to: (code, serialized response) for OK, (code, message) otherwise;
# it returns whether the client was still there to get it.
Answer = Callable[[int, "bytes | str"], bool]

# Typed contents field for each datatype (the protocol carries narrow integers in wide fields).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# Output datatype by numpy dtype (a dict lookup: ``dtype.name`` costs more on every call).
_DATATYPE_OF = {np.dtype(name): datatype for name, datatype in V2_DATATYPES.items()}
_WRONG_KEY = "missing or wrong API key; send it as metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'"


class InferenceService:
    """The six RPCs, answered from the shared model state on the loop, whatever the transport."""

    def __init__(self, state: ModelState) -> None:
        self.state = state
        self._cancelled: dict[str, int] = {}  # calls cancelled since the last summary line, by method
        document = v2.server_metadata(SERVER_VERSION)
        self._server_metadata = pb.ServerMetadataResponse(
            name=document["name"], version=document["version"], extensions=document["extensions"]
        ).SerializeToString()
        self._model_metadata: bytes | None = None
        self._response_heads: dict[tuple[np.dtype, tuple[int, ...]], bytes] = {}
        # method -> (request type, route kind, open without a key, quick answer or None for ModelInfer)
        self._methods: dict[str, tuple[Any, str, bool, Callable[[Any], bytes] | None]] = {
            "ServerLive": (pb.ServerLiveRequest, "grpc_live", True, self._live),
            "ServerReady": (pb.ServerReadyRequest, "grpc_ready", True, self._ready),
            "ModelReady": (pb.ModelReadyRequest, "grpc_model_ready", False, self._model_ready),
            "ServerMetadata": (pb.ServerMetadataRequest, "grpc_server", False, lambda _: self._server_metadata),
            "ModelMetadata": (pb.ModelMetadataRequest, "grpc_model", False, self._model_metadata_bytes),
            "ModelInfer": (pb.ModelInferRequest, "grpc_infer", False, None),
        }

    def handle(
        self, method: str, message: bytes, peer: str, authorization: str | None, api_key: str | None, answer: Answer
    ) -> None:
        """Answer one call: parse, check the key, run; ``answer`` gets its code and bytes or message.
        The call is recorded once answered."""
        started = time.perf_counter()
        request_type, _, open_, quick = self._methods[method]

        def finish(code: int, payload: bytes | str) -> None:
            delivered = answer(code, payload)
            self.record(method, code if delivered else CANCELLED, time.perf_counter() - started, peer)

        def run() -> bytes | None:
            try:
                request = request_type.FromString(message)
            except DecodeError:
                raise ClientError(
                    400,
                    f"the {request_type.__name__} message does not parse; send it as "
                    "the protocol's grpc_service.proto defines it",
                ) from None
            if not open_:
                self._check_key(authorization, api_key)
            if quick is None:  # ModelInfer: answered once its batch ran
                self._infer(request, lambda make: _finish_from(make, finish, method))
                return None
            return quick(request)

        _finish_from(run, finish, method)

    def record(self, method: str, code: int, seconds: float, peer: str) -> None:
        """The call's metrics and access-log line. Calls CANCELLED (their client had gone) are summed
        in one line a second instead: a client resetting thousands of calls a second would otherwise
        write the log at megabytes a second (hostile_bench's grpc-resets)."""
        status = _HTTP_STATUS.get(code, 500)
        self.state.metrics.request(self._methods[method][1], status, seconds)
        if code != CANCELLED:
            write_request("gRPC", _SERVICE + method, status, seconds, peer, CODE_NAMES.get(code, str(code)))
            return
        if not self._cancelled:
            asyncio.get_running_loop().call_later(CANCELLED_SUMMARY_S, self._summarize_cancelled, peer)
        self._cancelled[method] = self._cancelled.get(method, 0) + 1

    def _summarize_cancelled(self, peer: str) -> None:
        counts, self._cancelled = self._cancelled, {}
        calls = " ".join(f"{name}={n}" for name, n in sorted(counts.items()))
        log_event(event="grpc_cancelled", calls=sum(counts.values()), by_method=calls, first_peer=peer)

    # -- the RPCs --

    def _live(self, request: pb.ServerLiveRequest) -> bytes:
        return pb.ServerLiveResponse(live=True).SerializeToString()

    def _ready(self, request: pb.ServerReadyRequest) -> bytes:
        return pb.ServerReadyResponse(ready=self.state.ready).SerializeToString()

    def _model_ready(self, request: pb.ModelReadyRequest) -> bytes:
        self._check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.state.ready).SerializeToString()

    def _model_metadata_bytes(self, request: pb.ModelMetadataRequest) -> bytes:
        self._check_model(request.name, request.version)
        runtime = batched(self.state).runtime
        if self._model_metadata is None:
            document = v2.model_metadata_document(self.state.config, runtime)
            self._model_metadata = metadata_message(document).SerializeToString()
        return self._model_metadata

    def _infer(self, request: pb.ModelInferRequest, reply: Callable[[Callable[[], bytes]], None]) -> None:
        self._check_model(request.model_name, request.model_version)
        batcher = batched(self.state).batcher
        batch = _input(request, self.state)
        batcher.submit_answer(batch, lambda outputs: self._response(request, outputs), reply)

    # -- helpers --

    def _check_key(self, authorization: str | None, api_key: str | None) -> None:
        """The HTTP rule (``serving.auth``) on the call's metadata: ``authorization`` or ``x-api-key``."""
        if self.state.api_key is None:
            return
        headers = Headers()
        if authorization is not None:
            headers.add("authorization", authorization)
        if api_key is not None:
            headers.add("x-api-key", api_key)
        try:
            check_api_key(headers, self.state.api_key)
        except ClientError:
            raise ClientError(401, _WRONG_KEY) from None

    def _check_model(self, name: str, version: str) -> None:
        check_model(name, version or None, self.state.config.model_name)  # "" is the message's "no version"

    def _response(self, request: pb.ModelInferRequest, outputs: np.ndarray) -> bytes:
        check_finite_outputs(outputs)
        # Everything but the id and the output's bytes depends only on the output's dtype and
        # shape: serialized once per pair. Serialized messages concatenate (protobuf merges them
        # field by field), so the answer is that head, the id's field and the output's field.
        key = (outputs.dtype, outputs.shape)
        head = self._response_heads.get(key)
        if head is None:
            if len(self._response_heads) >= 64:
                self._response_heads.clear()
            datatype = _DATATYPE_OF.get(outputs.dtype) or outputs.dtype.name.upper()
            head = self._response_heads[key] = pb.ModelInferResponse(
                model_name=self.state.config.model_name,
                model_version="1",
                outputs=[
                    pb.ModelInferResponse.InferOutputTensor(name=v2.OUTPUT_NAME, datatype=datatype, shape=outputs.shape)
                ],
            ).SerializeToString()
        tail = pb.ModelInferResponse(id=request.id, raw_output_contents=[tensor_to_bytes(outputs)])
        return head + tail.SerializeToString()


def _finish_from(make: Callable[[], bytes | None], finish: Callable[[int, bytes | str], None], method: str) -> None:
    """Finish a call with what ``make`` returns (None: answered later), or with the status its error
    stands for: a client error's code and message, else INTERNAL (logged)."""
    try:
        payload = make()
    except ClientError as exc:
        finish(_CODE_OF_STATUS.get(exc.status, INVALID_ARGUMENT), cut(exc.message, MAX_STATUS_MESSAGE))
    except Exception:
        _internal_error(method)
        finish(INTERNAL, "internal server error; see the server log")
    else:
        if payload is not None:
            finish(OK, payload)


def _internal_error(method: str) -> None:
    log_event(event="internal_error", method="gRPC", path=_SERVICE + method, error=traceback.format_exc())


def _input(request: pb.ModelInferRequest, state: ModelState) -> np.ndarray:
    """The request's input tensors, bound to the model's inputs like the HTTP API's (``serving.request``)."""
    return bind(read_infer_request(request), state.config.inputs)


def read_infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """A ``ModelInferRequest`` as an ``InferRequest``: raw contents in input order, or typed contents."""
    # Each message field is read once: every read of a field builds a new Python object.
    tensors = request.inputs
    outputs = request.outputs
    if outputs:
        for i, output in enumerate(outputs):
            v2.check_output_name(output.name, f"outputs[{i}]")
    raw = request.raw_input_contents
    inputs = []
    try:
        for i, tensor in enumerate(tensors):
            where = f"inputs[{i}]"
            datatype = tensor.datatype
            shape = list(tensor.shape)
            if raw:
                v2.check_raw_contents(len(raw), len(tensors), where, tensor.HasField("contents"))
            if datatype == "BYTES":  # texts: the elements as sent (the count is checked when bound)
                elements = split_bytes(raw[i], where) if raw else list(tensor.contents.bytes_contents)
                inputs.append(InferInput(tensor.name, datatype, shape, elements, where=where))
            elif raw:
                inputs.append(InferInput(tensor.name, datatype, shape, raw=raw[i], where=where))
            else:
                inputs.append(InferInput(tensor.name, datatype, shape, contents=_contents_of(tensor), where=where))
    except TensorDataError as exc:
        raise ClientError(400, str(exc)) from None
    return InferRequest(tuple(inputs))


def _contents_of(tensor: Any) -> Callable[[list[int], str], np.ndarray]:
    return lambda shape, where: _from_contents(tensor, shape, where)


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
            raise TensorDataError(f"{where}.contents.{other}: {datatype} elements go in {field}")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise TensorDataError(f"{where}.contents.{field}: shape {shape} needs {count} element(s), got {len(values)}")
    dtype = RAW_DTYPES[datatype]
    wide = np.asarray(values)  # int32/int64/uint32/uint64/float32/float64 as sent
    if wide.size and dtype.kind in "iu" and wide.dtype != dtype:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise TensorDataError(f"{where}.contents.{field}: {datatype} takes values in {info.min}..{info.max}")
    return wide.astype(dtype.newbyteorder("=")).reshape(shape)


def metadata_message(document: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The V2 model metadata document (the HTTP API's) as its gRPC message."""

    def tensors(items: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            for t in items
        ]

    return pb.ModelMetadataResponse(
        name=document["name"],
        versions=document["versions"],
        platform=document["platform"],
        inputs=tensors(document["inputs"]),
        outputs=tensors(document["outputs"]),
    )


class GrpcFrontEnd:
    """The tonic transport on its threads, its calls answered on the running loop: bind, serve, drain."""

    def __init__(self, state: ModelState, host: str, port: int, service: InferenceService | None = None) -> None:
        self.state = state
        # A family whose ModelInfer is not a batched tensor (speech: an audio file) brings its own.
        self.service = service or InferenceService(state)
        self.host = host
        self.requested_port = port
        self.port = 0
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> int:
        """Bind and start serving; return the bound port (OSError when it cannot bind)."""
        from modelstack_grpc import (
            Server,  # the native transport loads only when gRPC is on
        )

        config = self.state.config
        try:
            # The HTTP front end's bounds, in gRPC's terms (serving.config, docs/serving.md).
            server = Server(
                self.host,
                self.requested_port,
                max_message_bytes=config.max_body_bytes,
                max_in_flight=config.max_connections,
                max_buffered_bytes=config.max_buffered_bytes,
                max_connections=config.max_connections,
                request_timeout_s=config.request_timeout_s,
                idle_timeout_s=config.idle_timeout_s,
            )
        except OSError as exc:
            raise OSError(f"cannot bind gRPC to {self.host}:{self.requested_port}: {exc}") from None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(server.fileno(), self._take_calls)
        self._server, self.port = server, server.port
        return self.port

    def _take_calls(self) -> None:
        server, service = self._server, self.service
        for call_id, method, message, peer, authorization, api_key, cancelled in server.take():
            if cancelled:  # the client went away before the call was taken: recorded, not run
                service.record(method, CANCELLED, 0.0, peer)
                continue

            def answer(code: int, payload: bytes | str, call_id: int = call_id) -> bool:
                if code == OK:
                    return server.reply(call_id, payload)
                return server.abort(call_id, code, payload)

            service.handle(method, message, peer, authorization, api_key, answer)

    async def stop(self, grace: float) -> bool:
        """Refuse new connections and calls; give the calls in flight up to ``grace`` seconds to be
        answered; return whether they all were."""
        server = self._server
        if server is None:
            return True
        server.begin_stop()
        deadline = time.monotonic() + grace
        # Connections that never finish their handshake do not hold the drain: calls do.
        while server.in_flight() and not server.stopped() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # calls in flight keep being answered meanwhile
        drained = server.in_flight() == 0
        if self._loop is not None:
            self._loop.remove_reader(server.fileno())
        server.close()
        self._server = None
        return drained
