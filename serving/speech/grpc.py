"""ModelInfer for speech over the Open Inference Protocol's gRPC service: the V2 route's tensors (one
BYTES input ``audio`` of shape [1] holding an encoded audio file, one BYTES output ``text``) on the
server's one gRPC transport (``serving.grpc_service``), which keeps the calls' bounds, the key rule,
the metrics and the access log as for every family. Only the message's meaning is here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from serving.bytes_tensors import TensorDataError, encode_bytes, split_bytes
from serving.errors import ClientError, show
from serving.grpc_service import InferenceService, metadata_message
from serving.proto import grpc_service_pb2 as pb
from serving.speech.audio import AudioError
from serving.speech.handlers import INPUT_NAME, OUTPUT_NAME, metadata_document, speech_model, v2_options

if TYPE_CHECKING:
    import concurrent.futures

    from serving.speech.engine import Transcript


class SpeechInferenceService(InferenceService):
    """The RPCs of every family, with speech's metadata and ModelInfer."""

    def _model_metadata_bytes(self, request: pb.ModelMetadataRequest) -> bytes:
        self._check_model(request.name, request.version)
        return metadata_message(metadata_document(self.state)).SerializeToString()

    def _infer(self, request: pb.ModelInferRequest, reply: Callable[[Callable[[], bytes]], None]) -> None:
        self._check_model(request.model_name, request.model_version)
        model = speech_model(self.state)
        data = audio_of(request)
        options = v2_options(parameters_of(request.parameters), model)
        name = self.state.config.model_name

        def done(future: concurrent.futures.Future[Transcript]) -> None:
            def answer() -> bytes:
                try:
                    transcript = future.result()
                except AudioError as exc:
                    raise ClientError(exc.status, str(exc)) from None
                return pb.ModelInferResponse(
                    model_name=name,
                    model_version="1",
                    id=request.id,
                    outputs=[pb.ModelInferResponse.InferOutputTensor(name=OUTPUT_NAME, datatype="BYTES", shape=[1])],
                    raw_output_contents=[encode_bytes([transcript.text])],
                ).SerializeToString()

            reply(answer)

        model.submit(data, "inputs[0]", options, done)


def audio_of(request: pb.ModelInferRequest) -> bytes:
    """The one encoded audio file: raw_input_contents[0] (length-prefixed, as clients send BYTES) or
    contents.bytes_contents; each mistake a 400 naming the field."""
    tensors = request.inputs
    if len(tensors) != 1:
        raise ClientError(400, f'inputs: must be one BYTES tensor named "{INPUT_NAME}", got {len(tensors)} tensors')
    tensor, where = tensors[0], "inputs[0]"
    if tensor.name != INPUT_NAME:
        raise ClientError(400, f'{where}.name: must be "{INPUT_NAME}", got {show(tensor.name)}')
    if tensor.datatype != "BYTES":
        raise ClientError(
            400, f'{where}.datatype: must be "BYTES" (an encoded audio file), got {show(tensor.datatype)}'
        )
    if list(tensor.shape) != [1]:
        raise ClientError(400, f"{where}.shape: must be [1] (one audio file per request), got {list(tensor.shape)}")
    for i, output in enumerate(request.outputs):
        if output.name != OUTPUT_NAME:
            raise ClientError(
                400, f'outputs[{i}].name: this model has one output, "{OUTPUT_NAME}"; got {show(output.name)}'
            )
    raw = request.raw_input_contents
    try:
        if raw:
            if len(raw) != 1 or tensor.HasField("contents"):
                raise TensorDataError(
                    "raw_input_contents: one entry for the one input, and the tensor given only one way"
                )
            elements = split_bytes(raw[0], "raw_input_contents[0]")
        else:
            elements = list(tensor.contents.bytes_contents)
    except TensorDataError as exc:
        raise ClientError(400, str(exc)) from None
    if len(elements) != 1:
        raise ClientError(400, f"{where}: shape [1] needs one element (the audio file), got {len(elements)}")
    return bytes(elements[0])


def parameters_of(parameters: Any) -> dict[str, Any]:
    """The request's parameters map (``InferParameter`` values) as plain values."""
    found: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        found[key] = None if choice is None else getattr(parameter, choice)
    return found
