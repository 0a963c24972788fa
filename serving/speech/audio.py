"""Encoded audio bytes to 16 kHz mono float32, bounded by a duration limit.

PyAV (FFmpeg's demuxers and decoders in a wheel) reads WAV, FLAC, MP3, Ogg Vorbis/Opus, WebM and
more, at any rate and channel count; its resampler gives Whisper's 16 kHz mono. Decoding stops
as soon as the audio passes ``max_seconds`` instead of decoding it all first: a few megabytes of
Opus can hold hours, which would be gigabytes as float32. Problems are ``AudioError`` with the
HTTP status they deserve (400 undecodable / empty / no audio, 413 too long).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Audio a client sent that cannot be transcribed; ``status`` is 400 or 413."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Audio:
    """Decoded audio: 16 kHz mono float32 in [-1, 1] and the container's format name."""

    samples: np.ndarray
    format: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode(data: bytes, max_seconds: float, part: str = "file") -> Audio:
    """``data`` decoded; AudioError naming ``part`` when it is empty, not audio or too long."""
    if not data:
        raise AudioError(400, f"{part}: is empty (0 bytes); send an audio file (wav, flac, mp3, ogg, webm)")
    import av  # PyAV loads FFmpeg's libraries: only when audio arrives

    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(400, f"{part}: has no audio stream ({container.format.name})")
            name = container.format.name
            samples = _read(container, max_seconds, part)
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise AudioError(
            400,
            f"{part}: could not be decoded as audio ({type(exc).__name__}: {exc}); "
            "send wav, flac, mp3, ogg/opus or webm",
        ) from exc
    return Audio(samples, name)


def _read(container: object, max_seconds: float, part: str) -> np.ndarray:
    import av

    assert isinstance(container, av.container.InputContainer)
    stream = container.streams.audio[0]
    limit = int(max_seconds * SAMPLE_RATE)
    # A declared duration past the limit is refused before any decoding.
    if container.duration is not None and container.duration / av.time_base > max_seconds + 1.0:
        raise _too_long(container.duration / av.time_base, max_seconds, part)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            chunk = out.to_ndarray().reshape(-1)
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise _too_long(total / SAMPLE_RATE, max_seconds, part, at_least=True)
    for out in resampler.resample(None):  # what the resampler still holds
        chunks.append(out.to_ndarray().reshape(-1))
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    if len(pcm) > limit:
        raise _too_long(len(pcm) / SAMPLE_RATE, max_seconds, part)
    return pcm.astype(np.float32) / 32768.0


def _too_long(seconds: float, limit: float, part: str, at_least: bool = False) -> AudioError:
    what = f"at least {seconds:.1f}" if at_least else f"{seconds:.1f}"
    return AudioError(413, f"{part}: audio is {what} s long; the limit is {limit:g} s (serving.max_audio_seconds)")
