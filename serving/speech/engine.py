"""The served Whisper model: faster-whisper over CTranslate2, one transcription at a time in a worker.

Why faster-whisper rather than CTranslate2's ``Whisper`` class directly: the encoder pass and the
decoding loop run in CTranslate2 either way (the measured cost, docs/speech.md), and
faster-whisper adds what a server needs around it — the log-mel front end in numpy, 30-second
windows with timestamps carried across them, Silero voice-activity detection on ONNX Runtime
(without it, 30 s of silence comes back as "you"), prompts and the temperature fallback — with
no PyTorch.

Transcriptions run on one worker thread with ``threads`` CTranslate2 threads: on a replica's few
cores one transcription at a time using them all finishes each request soonest, and the event
loop never waits on the model. The queue depth is what waits behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serving.speech.audio import SAMPLE_RATE, Audio, decode
from serving.speech.metrics import SpeechMetrics

if TYPE_CHECKING:
    import numpy as np

    from serving.metrics import Metrics

COMPUTE_TYPES = ("float32", "int8", "int8_float32", "int16")


@dataclass(frozen=True)
class Settings:
    """How the model is run: written by prep (the chosen variant) and the spec's ``serving``."""

    model_dir: str
    compute_type: str = "int8"
    beam_size: int = 1
    threads: int = 1
    max_audio_seconds: float = 600.0
    vad: bool = True
    english_only: bool = True


@dataclass(frozen=True)
class Options:
    """One request's choices (the OpenAI form's fields)."""

    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: tuple[tuple[float, float, str], ...] = ()


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: tuple[Segment, ...] = field(default=())


def transcribe_samples(model: Any, samples: np.ndarray, settings: Settings, options: Options) -> Transcript:
    """One transcription with faster-whisper (prep measures variants with this same function)."""
    duration = len(samples) / SAMPLE_RATE
    if len(samples) == 0:
        return Transcript("", options.language or "en", 0.0)
    segments, info = model.transcribe(
        samples,
        language=options.language or ("en" if settings.english_only else None),
        beam_size=settings.beam_size,
        temperature=options.temperature,
        initial_prompt=options.prompt or None,
        vad_filter=settings.vad,
        word_timestamps=options.word_timestamps,
        condition_on_previous_text=False,  # a long file's one bad window must not derail the rest
    )
    out = tuple(
        Segment(
            s.id,
            s.seek,
            round(s.start, 3),
            round(s.end, 3),
            s.text,
            tuple(s.tokens),
            float(s.temperature or 0.0),
            float(s.avg_logprob),
            float(s.compression_ratio),
            float(s.no_speech_prob),
            tuple((round(w.start, 3), round(w.end, 3), w.word) for w in (s.words or ())),
        )
        for s in segments
    )
    return Transcript("".join(s.text for s in out).strip(), info.language, duration, out)


def load_whisper(settings: Settings) -> Any:
    # CTranslate2 and tokenizers load here, not at import.
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]

    return WhisperModel(
        settings.model_dir,
        device="cpu",
        compute_type=settings.compute_type,
        cpu_threads=settings.threads,
        num_workers=1,
        local_files_only=True,
    )


class SpeechModel:
    """What the server serves for task ``speech-recognition`` (``serving.families.Served``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        started = time.perf_counter()
        self.model = load_whisper(settings)
        self._warm_up()
        self.warm_up_ms = (time.perf_counter() - started) * 1000
        self.metrics = SpeechMetrics()
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="transcribe")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[concurrent.futures.Future[Transcript]] = set()
        self._lock = threading.Lock()

    def _warm_up(self) -> None:
        import numpy as np

        # One real window with speech-like noise: loads every kernel the first request would.
        noise = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE).astype(np.float32)
        transcribe_samples(self.model, noise, self.settings, Options())

    # --- serving.families.Served ---
    def start(self, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        self._loop = loop
        add = getattr(metrics, "add_section", None)
        if add is not None:
            add(self.metrics.render)

    async def drain(self) -> None:
        with self._lock:
            pending = list(self._pending)
        if pending:
            await asyncio.wait([asyncio.wrap_future(f) for f in pending])

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    def ready_fields(self) -> dict[str, Any]:
        s = self.settings
        return {
            "warm_up_ms": round(self.warm_up_ms, 1),
            "threads": s.threads,
            "compute_type": s.compute_type,
            "beam_size": s.beam_size,
            "vad": s.vad,
            "max_audio_seconds": s.max_audio_seconds,
        }

    # --- requests ---
    def submit(
        self, data: bytes, part: str, options: Options, done: Callable[[concurrent.futures.Future[Transcript]], None]
    ) -> None:
        """Decode and transcribe ``data`` on the worker; ``done(future)`` runs on the event loop."""
        self.metrics.queued(+1)
        future = self._worker.submit(self._run, data, part, options)
        with self._lock:
            self._pending.add(future)
        loop = self._loop

        def finished(f: concurrent.futures.Future[Transcript]) -> None:
            with self._lock:
                self._pending.discard(f)
            if loop is None:
                done(f)
            else:
                try:
                    loop.call_soon_threadsafe(done, f)
                except RuntimeError:  # the loop is closed: the server is gone
                    pass

        future.add_done_callback(finished)

    def _run(self, data: bytes, part: str, options: Options) -> Transcript:
        try:
            audio: Audio = decode(data, self.settings.max_audio_seconds, part)
            started = time.perf_counter()
            result = transcribe_samples(self.model, audio.samples, self.settings, options)
            self.metrics.transcribed(audio.seconds, time.perf_counter() - started)
            return result
        finally:
            self.metrics.queued(-1)
