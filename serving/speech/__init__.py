"""The ``speech-recognition`` serving family: a Whisper model in CTranslate2's format, transcribing audio files.

Routes: OpenAI's ``POST /v1/audio/transcriptions`` (multipart form) and the Open Inference
Protocol's ``POST /v2/models/<name>/infer`` with a BYTES input ``audio`` (the encoded file) and a
BYTES output ``text``, plus V2 metadata and readiness. ``config.artifact`` is the model folder
(``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``); how it is run (the
variant prep chose, the audio limit) is ``config.metadata["speech"]``, the fields of
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
    from serving.speech.engine import Settings, SpeechModel
    from serving.state import ModelState

SETTINGS_KEY = "speech"
_FIELDS: dict[str, tuple[type, ...]] = {
    "compute_type": (str,),
    "beam_size": (int,),
    "max_audio_seconds": (int, float),
    "vad": (bool,),
    "english_only": (bool,),
}


def settings(config: ServingConfig) -> Settings:
    from serving.speech.engine import Settings

    chosen = dict(config.metadata.get(SETTINGS_KEY) or {})
    chosen.setdefault("max_audio_seconds", config.max_audio_seconds)  # the spec's serving.max_audio_seconds
    return Settings(model_dir=config.artifact, threads=config.threads, **chosen)


def check(data: Mapping[str, Any]) -> list[str]:
    """Problems with ``metadata.speech`` in a raw serving.json."""
    from serving.speech.engine import COMPUTE_TYPES

    metadata = data.get("metadata") or {}
    chosen = metadata.get(SETTINGS_KEY, {}) if isinstance(metadata, dict) else {}
    if not isinstance(chosen, dict):
        return [f"metadata.{SETTINGS_KEY}: must be an object"]
    problems = []
    for key, value in chosen.items():
        where = f"metadata.{SETTINGS_KEY}.{key}"
        if key not in _FIELDS:
            problems.append(f"{where}: unknown field; allowed: {', '.join(_FIELDS)}")
        elif not isinstance(value, _FIELDS[key]) or (isinstance(value, bool) and bool not in _FIELDS[key]):
            problems.append(f"{where}: wrong type {type(value).__name__}")
    if chosen.get("compute_type", "int8") not in COMPUTE_TYPES:
        problems.append(f"metadata.{SETTINGS_KEY}.compute_type: must be one of {', '.join(COMPUTE_TYPES)}")
    beam = chosen.get("beam_size", 1)
    if isinstance(beam, int) and not 1 <= beam <= 16:
        problems.append(f"metadata.{SETTINGS_KEY}.beam_size: must be 1..16")
    seconds = chosen.get("max_audio_seconds", 600)
    if isinstance(seconds, (int, float)) and not 0 < seconds <= 24 * 3600:
        problems.append(f"metadata.{SETTINGS_KEY}.max_audio_seconds: must be > 0 and at most 86400")
    return problems


def load(config: ServingConfig) -> SpeechModel:
    """The model loaded and warmed up (on the loading thread)."""
    from serving.speech.engine import SpeechModel

    return SpeechModel(settings(config))


def _metadata(state: ModelState, request: Request, reply: Reply) -> Response:
    from serving.speech.handlers import INPUT_NAME, OUTPUT_NAME, speech_model

    model = speech_model(state)
    doc = {
        "name": state.config.model_name,
        "versions": ["1"],
        "platform": "ctranslate2_whisper",
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [1]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "BYTES", "shape": [1]}],
        "parameters": model.ready_fields(),
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
