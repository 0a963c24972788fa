"""The speech routes: OpenAI's ``POST /v1/audio/transcriptions`` and the V2 infer with a BYTES audio input.

Both parse on the event loop (bounded, cheap) and hand the encoded audio to the model's worker
thread, which decodes and transcribes it; the answer is written when the worker is done. Every
client mistake is a 4xx naming the part: the form field, the tensor, or the audio ``file``.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from serving.errors import ClientError, encode_json, kind, show
from serving.messages import Request, Response
from serving.speech import formats, forms
from serving.speech.audio import AudioError
from serving.speech.engine import Options, SpeechModel, Transcript

if TYPE_CHECKING:
    from serving.state import ModelState

Reply = Callable[[Callable[[], Response]], None]
# Names OpenAI clients send for a Whisper model; the served model's own name is accepted too.
OPENAI_MODEL_NAMES = frozenset({"whisper-1"})
INPUT_NAME = "audio"
OUTPUT_NAME = "text"


def speech_model(state: ModelState) -> SpeechModel:
    """The loaded model, or a 503 while it loads."""
    model = getattr(state, "served", None)
    if not state.ready or not isinstance(model, SpeechModel):
        raise ClientError(
            503,
            f"model {show(state.config.model_name)} is still loading; retry when /readyz answers 200",
            headers=(("Retry-After", "1"),),
        )
    return model


def metadata_document(state: ModelState) -> dict[str, Any]:
    """The V2 model metadata (HTTP and gRPC): one BYTES input, one BYTES output, how the model runs."""
    model = speech_model(state)
    return {
        "name": state.config.model_name,
        "versions": ["1"],
        "platform": "ctranslate2_whisper",
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [1]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "BYTES", "shape": [1]}],
        "parameters": model.ready_fields(),
    }


def _answer(
    reply: Reply, make: Callable[[Transcript], Response]
) -> Callable[[concurrent.futures.Future[Transcript]], None]:
    """The worker's result as a response: AudioError → its 4xx; anything else re-raised (a logged 500)."""

    def done(future: concurrent.futures.Future[Transcript]) -> None:
        def response() -> Response:
            try:
                transcript = future.result()
            except AudioError as exc:
                raise ClientError(exc.status, str(exc)) from None
            return make(transcript)

        reply(response)

    return done


# --- OpenAI ---------------------------------------------------------------------------------------


def transcriptions(state: ModelState, request: Request, reply: Reply) -> None:
    model = speech_model(state)
    parts = forms.parse(request.headers.get("content-type"), request.body, frozenset({"file"}))
    file = parts.get("file")
    if file is None:
        raise ClientError(400, "file: required form part is missing; send the audio as a file part named 'file'")
    name = _text(parts, "model")
    if name is None:
        raise ClientError(400, f"model: required form field is missing; send {show(state.config.model_name)}")
    if name != state.config.model_name and name not in OPENAI_MODEL_NAMES:
        raise ClientError(
            404, f"model: {show(name)} is not served here; this server serves {show(state.config.model_name)}"
        )
    response_format = _text(parts, "response_format") or "json"
    if response_format not in formats.FORMATS:
        raise ClientError(
            400, f"response_format: must be one of {', '.join(formats.FORMATS)}, got {show(response_format)}"
        )
    options = Options(
        language=_language(_text(parts, "language"), model),
        prompt=_text(parts, "prompt"),
        temperature=_temperature(_text(parts, "temperature")),
        word_timestamps=_granularities(parts) and response_format == "verbose_json",
    )

    def make(transcript: Transcript) -> Response:
        body, content_type = formats.render(transcript, response_format)
        return Response(200, body, content_type)

    model.submit(file.data, "file", options, _answer(reply, make))


def _text(parts: dict[str, forms.Part], name: str) -> str | None:
    part = parts.get(name)
    return None if part is None else (part.text() or None)


def _language(value: str | None, model: SpeechModel) -> str | None:
    if value is None:
        return None
    code = value.lower()
    if model.settings.english_only and code != "en":
        raise ClientError(
            400, f"language: this model transcribes English only; send 'en' or leave it out, got {show(value)}"
        )
    if not (code.isascii() and code.isalpha() and 2 <= len(code) <= 3):
        raise ClientError(400, f"language: must be an ISO-639-1 code such as 'en', got {show(value)}")
    return code


def _temperature(value: str | None) -> float:
    if value is None:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise ClientError(400, f"temperature: must be a number from 0 to 1, got {show(value)}")
    return number


def _granularities(parts: dict[str, forms.Part]) -> bool:
    """Whether word timestamps were asked for (``timestamp_granularities[]``)."""
    wanted = {p.text() for n, p in parts.items() if n.startswith("timestamp_granularities")}
    unknown = wanted - {"word", "segment"}
    if unknown:
        raise ClientError(400, f"timestamp_granularities[]: must be 'word' or 'segment', got {show(sorted(unknown))}")
    return "word" in wanted


# --- Open Inference Protocol V2 -----------------------------------------------------------------


def v2_infer(state: ModelState, request: Request, reply: Reply) -> None:
    """One BYTES input ``audio`` of shape [1]: the encoded file (base64 in JSON, raw with the binary
    extension); one BYTES output ``text``."""
    from serving.v2 import read_envelope

    model = speech_model(state)
    header_length = request.headers.get("inference-header-content-length") or None
    payload, tail, request_id = read_envelope(request.body, header_length)
    data = _v2_audio(payload, tail)
    options = v2_options(payload.get("parameters") or {}, model)
    name = state.config.model_name
    binary = _binary_output(payload)

    def make(transcript: Transcript) -> Response:
        from serving import v2_binary
        from serving.bytes_tensors import encode_bytes

        doc: dict[str, Any] = {"model_name": name, "model_version": "1"}
        if request_id is not None:
            doc["id"] = request_id
        output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "BYTES", "shape": [1]}
        doc["outputs"] = [output]
        if not binary:
            output["data"] = [transcript.text]
            return Response(200, encode_json(doc).encode())
        raw = encode_bytes([transcript.text.encode()])
        output["parameters"] = {"binary_data_size": len(raw)}
        body, length = v2_binary.encode_binary_body(encode_json(doc).encode(), [raw])
        return Response(200, body, v2_binary.OCTET_STREAM, headers=(("Inference-Header-Content-Length", str(length)),))

    model.submit(data, "inputs[0].data", options, _answer(reply, make))


def v2_options(parameters: dict[str, Any], model: SpeechModel) -> Options:
    """The V2 request's ``parameters`` (JSON's object, gRPC's map): ``language`` and ``temperature``."""
    language = parameters.get("language")
    if language is not None and not isinstance(language, str):
        raise ClientError(400, f"parameters.language: must be a string such as 'en', got {show(language)}")
    temperature = parameters.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ClientError(400, f"parameters.temperature: must be a number from 0 to 1, got {show(temperature)}")
    return Options(language=_language(language, model), temperature=_temperature(str(temperature)))


def _binary_output(payload: dict[str, Any]) -> bool:
    """Whether the text goes back with the binary extension (the request's or the output's parameters)."""
    from serving.v2_binary import binary_outputs_wanted

    outputs = payload.get("outputs")
    wanted = (
        outputs[0].get("parameters") if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict) else None
    )
    return binary_outputs_wanted(payload.get("parameters"), wanted)


def _v2_audio(payload: dict[str, Any], tail: memoryview | None) -> bytes:
    from serving.bytes_tensors import TensorDataError, decode_bytes
    from serving.v2_binary import BinaryTail

    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        got = f"{len(inputs)} tensors" if isinstance(inputs, list) else kind(inputs)
        raise ClientError(400, f'inputs: must be a list with one BYTES tensor named "{INPUT_NAME}", got {got}')
    tensor, where = inputs[0], "inputs[0]"
    if tensor.get("name") != INPUT_NAME:
        raise ClientError(400, f'{where}.name: must be "{INPUT_NAME}", got {show(tensor.get("name"))}')
    if tensor.get("datatype") != "BYTES":
        raise ClientError(
            400, f'{where}.datatype: must be "BYTES" (an encoded audio file), got {show(tensor.get("datatype"))}'
        )
    if tensor.get("shape") != [1]:
        raise ClientError(
            400, f"{where}.shape: must be [1] (one audio file per request), got {show(tensor.get('shape'))}"
        )
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if tail is None:
            raise ClientError(
                400, f"{where}.parameters.binary_data_size: needs the Inference-Header-Content-Length header"
            )
        try:
            reader = BinaryTail(tail)
            raw = reader.take(size, where)
            reader.finish()
            return bytes(decode_bytes(raw, 1, where)[0])
        except TensorDataError as exc:
            raise ClientError(400, str(exc)) from None
    data = tensor.get("data")
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], str):
        raise ClientError(400, f"{where}.data: must be [one base64 string of the audio file], got {kind(data)}")
    try:
        return base64.b64decode(data[0], validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(400, f"{where}.data: is not base64 (in JSON the audio file is base64-encoded)") from None
