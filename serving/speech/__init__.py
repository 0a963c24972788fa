"""The ``speech-recognition`` serving family: a Whisper model in CTranslate2's format, transcribing audio files.

Routes: OpenAI's ``POST /v1/audio/transcriptions`` (multipart form) and the Open Inference
Protocol's ``POST /v2/models/<name>/infer`` with a BYTES input ``audio`` (the encoded file) and a
BYTES output ``text``, plus V2 metadata and readiness; the same tensors over the protocol's gRPC
ModelInfer on ``grpc_port`` (``grpc.py``). ``config.artifact`` is the model folder
(``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``); how it is run (the
variant prep chose, the audio limit) is the folder's ``speech.json`` (written by prep, shipped with
the model), then ``config.metadata["speech"]`` field by field over it: the fields of
``serving.speech.engine.Settings`` other than ``model_dir`` and ``threads``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from serving.errors import encode_json
from serving.messages import Request, Response
from serving.routes import GET, POST, Reply, Route

if TYPE_CHECKING:
    from serving.config import ServingConfig
    from serving.grpc_service import GrpcFrontEnd
    from serving.speech.engine import Settings, SpeechModel
    from serving.state import ModelState

SETTINGS_KEY = "speech"
SETTINGS_FILE = "speech.json"  # in the model folder: the variant prep chose
_FIELDS: dict[str, tuple[type, ...]] = {
    "compute_type": (str,),
    "beam_size": (int,),
    "max_audio_seconds": (int, float),
    "vad": (bool,),
    "english_only": (bool,),
}


def settings(config: ServingConfig) -> Settings:
    from serving.speech.engine import Settings

    chosen = {**folder_settings(config.artifact), **(config.metadata.get(SETTINGS_KEY) or {})}
    chosen.setdefault("max_audio_seconds", config.max_audio_seconds)  # the spec's serving.max_audio_seconds
    return Settings(model_dir=config.artifact, threads=config.threads, **chosen)


def folder_settings(model_dir: str) -> dict[str, Any]:
    """The model folder's ``speech.json`` (the variant prep chose), or {} when it has none;
    ValueError naming the file when it is not a valid settings object."""
    import json
    from pathlib import Path

    path = Path(model_dir) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON settings file ({exc})") from None
    problems = _problems(found, str(path))
    if problems:
        raise ValueError("; ".join(problems))
    return dict(found)


def check(data: Mapping[str, Any]) -> list[str]:
    """Problems with ``metadata.speech`` in a raw serving.json."""
    metadata = data.get("metadata") or {}
    chosen = metadata.get(SETTINGS_KEY, {}) if isinstance(metadata, dict) else {}
    return _problems(chosen, f"metadata.{SETTINGS_KEY}")


def _problems(chosen: Any, at: str) -> list[str]:
    from serving.speech.engine import COMPUTE_TYPES

    if not isinstance(chosen, dict):
        return [f"{at}: must be an object"]
    problems = []
    for key, value in chosen.items():
        where = f"{at}.{key}"
        if key not in _FIELDS:
            problems.append(f"{where}: unknown field; allowed: {', '.join(_FIELDS)}")
        elif not isinstance(value, _FIELDS[key]) or (isinstance(value, bool) and bool not in _FIELDS[key]):
            problems.append(f"{where}: wrong type {type(value).__name__}")
    if chosen.get("compute_type", "int8") not in COMPUTE_TYPES:
        problems.append(f"{at}.compute_type: must be one of {', '.join(COMPUTE_TYPES)}")
    beam = chosen.get("beam_size", 1)
    if isinstance(beam, int) and not 1 <= beam <= 16:
        problems.append(f"{at}.beam_size: must be 1..16")
    seconds = chosen.get("max_audio_seconds", 600)
    if isinstance(seconds, (int, float)) and not 0 < seconds <= 24 * 3600:
        problems.append(f"{at}.max_audio_seconds: must be > 0 and at most 86400")
    return problems


# serving.json lists no tensor signature for this family: audio comes as a file, text goes back.
INPUTS = False
ENDPOINT = "/v1/audio/transcriptions"  # what a stack's `endpoint` output shows


def warm_up_request(model_name: str) -> tuple[str, dict[str, Any]]:
    """What a deployer sends a new replica before it takes traffic: half a second of silence as a WAV
    file through the V2 route (VAD cuts it: answered at once, with empty text)."""
    import base64
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * 8_000)
    audio = base64.b64encode(buffer.getvalue()).decode()
    body = {"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": [audio]}]}
    return f"/v2/models/{model_name}/infer", body


def load(config: ServingConfig) -> SpeechModel:
    """The model loaded and warmed up (on the loading thread)."""
    from serving.speech.engine import SpeechModel

    return SpeechModel(settings(config))


def _metadata(state: ModelState, request: Request, reply: Reply) -> Response:
    from serving.speech.handlers import metadata_document

    return Response(200, encode_json(metadata_document(state)).encode())


def grpc_front(state: ModelState, host: str, port: int) -> GrpcFrontEnd:
    """The Open Inference Protocol's gRPC service: ModelInfer with the V2 route's tensors (`grpc.py`)."""
    from serving.grpc_service import GrpcFrontEnd
    from serving.speech.grpc import SpeechInferenceService

    return GrpcFrontEnd(state, host, port, SpeechInferenceService(state))


def _v1_metadata(state: ModelState, request: Request, reply: Reply) -> Response:
    """What every family answers at TF Serving's metadata path: the model and ``metadata.modelstack``
    (variant, artifact sha256), which a rollout reads through the proxy to see the new version serve."""
    doc = {
        "model_spec": {"name": state.config.model_name, "signature_name": "", "version": "1"},
        "metadata": {"modelstack": state.config.metadata},
    }
    return Response(200, encode_json(doc).encode())


def _model_ready(state: ModelState, request: Request, reply: Reply) -> Response:
    ready = state.ready
    return Response(200 if ready else 503, encode_json({"name": state.config.model_name, "ready": ready}).encode())


def _transcriptions(state: ModelState, request: Request, reply: Reply) -> None:
    from serving.speech.handlers import transcriptions

    transcriptions(state, request, reply)


def _infer(state: ModelState, request: Request, reply: Reply) -> None:
    from serving.speech.handlers import v2_infer

    v2_infer(state, request, reply)


ROUTES: tuple[Route, ...] = (
    Route(
        "transcriptions",
        POST,
        "/v1/audio/transcriptions",
        _transcriptions,
        "OpenAI transcription API: multipart form `file`, `model`, `language`, `prompt`, `temperature`, "
        "`response_format` (json, text, srt, vtt, verbose_json), `timestamp_granularities[]`",
    ),
    Route(
        "v1_metadata",
        GET,
        "/v1/models/<name>/metadata",
        _v1_metadata,
        "the model and `metadata.modelstack` (variant, artifact sha256): what a rollout checks the new version by",
    ),
    Route(
        "v2_model",
        GET,
        "/v2/models/<name>",
        _metadata,
        "V2 model metadata: input `audio` (BYTES [1], an encoded file), output `text` (BYTES [1])",
    ),
    Route(
        "v2_model_ready",
        GET,
        "/v2/models/<name>/ready",
        _model_ready,
        '`{"name": ..., "ready": true}`; 503 while loading',
    ),
    Route(
        "v2_infer",
        POST,
        "/v2/models/<name>/infer",
        _infer,
        'input `{"name": "audio", "datatype": "BYTES", "shape": [1], "data": ["<base64 file>"]}` (or the '
        "raw file with the binary extension) → output `text`",
    ),
)


def routes(config: ServingConfig) -> tuple[Route, ...]:
    return ROUTES
