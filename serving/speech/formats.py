"""A transcript in each ``response_format`` of OpenAI's transcription API: json, text, srt, vtt, verbose_json."""

from __future__ import annotations

from typing import Any

from serving.errors import encode_json
from serving.messages import JSON
from serving.speech.engine import Segment, Transcript

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TEXT = b"text/plain; charset=utf-8"


def render(transcript: Transcript, response_format: str) -> tuple[bytes, bytes]:
    """(body, content type) for ``response_format`` (already checked to be one of FORMATS)."""
    if response_format == "json":
        return encode_json({"text": transcript.text}).encode(), JSON
    if response_format == "text":
        return (transcript.text + "\n").encode(), TEXT
    if response_format == "srt":
        return srt(transcript.segments).encode(), TEXT
    if response_format == "vtt":
        return vtt(transcript.segments).encode(), b"text/vtt; charset=utf-8"
    return encode_json(verbose(transcript)).encode(), JSON


def verbose(t: Transcript) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "task": "transcribe",
        "language": t.language,
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [
            {
                "id": s.id,
                "seek": s.seek,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": list(s.tokens),
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in t.segments
        ],
    }
    words = [{"word": w, "start": a, "end": b} for s in t.segments for a, b, w in s.words]
    if words:
        doc["words"] = words
    return doc


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: tuple[Segment, ...]) -> str:
    blocks = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n" for i, s in enumerate(segments, 1)
    ]
    return "\n".join(blocks)


def vtt(segments: tuple[Segment, ...]) -> str:
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)
