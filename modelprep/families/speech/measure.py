"""Measure Whisper variants on the evaluation set: WER, real-time factor, latency per clip, resident memory.

A variant is a CTranslate2 compute type × a decoding setting (greedy or beam 5); the weights on disk
are the same file for every variant (CTranslate2 converts them when it loads), so what a variant
changes is resident memory and speed, and what it may cost is word error rate. Every transcription
goes through ``serving.speech.engine.transcribe_samples``, the function the server runs, with
``temperature=0`` (the default fallback samples, and two identical runs would differ) and the
server's voice-activity filter.

Resident memory is read in a fresh process per variant (``python -m modelprep.families.speech.measure
rss ...``): in a process that already loaded another variant the figure would mix both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from modelprep.families.speech.corpus import SAMPLE_RATE, EvaluationSet
from modelprep.families.speech.wer import wer


@dataclass(frozen=True)
class Decoding:
    """One variant's settings: what the server is told to run (``speech.json`` in the shipped folder)."""

    compute_type: str
    beam_size: int

    @property
    def name(self) -> str:
        suffix = "" if self.beam_size == 1 else f"-beam{self.beam_size}"
        return f"ct2-{self.compute_type}{suffix}"


@dataclass(frozen=True)
class Scores:
    """A variant on a set of clips."""

    name: str
    wer: float
    audio_seconds: float
    compute_seconds: float
    clip_seconds: tuple[float, ...]  # compute time per clip
    texts: tuple[str, ...]
    cpu_seconds: float = 0.0  # CPU time of the process (every thread) over the clips

    @property
    def cpu_rtf(self) -> float:
        """CPU seconds per second of audio: unlike wall time, not stretched by other processes' load."""
        return self.cpu_seconds / self.audio_seconds if self.audio_seconds else 0.0

    @property
    def rtf(self) -> float:
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.clip_seconds, q) * 1000) if self.clip_seconds else 0.0


class Transcriber:
    """One loaded variant; ``__call__`` transcribes float32 16 kHz samples the way the server does."""

    def __init__(self, model_dir: Path, decoding: Decoding, threads: int) -> None:
        from serving.speech.engine import (
            Options,
            Settings,
            load_whisper,
            transcribe_samples,
        )

        self.decoding = decoding
        self.settings = Settings(str(model_dir), decoding.compute_type, decoding.beam_size, threads)
        self._model = load_whisper(self.settings)
        self._options = Options(language="en", temperature=0.0)
        self._run = transcribe_samples

    def __call__(self, samples: np.ndarray) -> tuple[str, float, float]:
        """(text, wall seconds, CPU seconds of the process)."""
        started, cpu = time.perf_counter(), time.process_time()
        text = self._run(self._model, samples, self.settings, self._options).text
        return text, time.perf_counter() - started, time.process_time() - cpu


def score(
    transcribers: Sequence[Transcriber],
    dataset: EvaluationSet,
    step: Callable[[int, int], None] = lambda done, total: None,
) -> list[Scores]:
    """Every transcriber on every clip, interleaved clip by clip so they share the machine's load."""
    texts: list[list[str]] = [[] for _ in transcribers]
    times: list[list[float]] = [[] for _ in transcribers]
    cpu = [0.0 for _ in transcribers]
    for i in range(len(dataset.clips)):
        samples = dataset.clip(i)
        for j, transcribe in enumerate(transcribers):
            text, seconds, cpu_seconds = transcribe(samples)
            texts[j].append(text)
            times[j].append(seconds)
            cpu[j] += cpu_seconds
        step(i + 1, len(dataset.clips))
    references = [c.text for c in dataset.clips]
    audio = sum(c.samples for c in dataset.clips) / SAMPLE_RATE
    return [
        Scores(
            t.decoding.name, wer(references, texts[j]), audio, sum(times[j]), tuple(times[j]), tuple(texts[j]), cpu[j]
        )
        for j, t in enumerate(transcribers)
    ]


def resident_bytes(model_dir: Path, decoding: Decoding, threads: int) -> int:
    """Resident memory of a fresh process after loading ``decoding`` and transcribing one second."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelprep.families.speech.measure",
            "rss",
            str(model_dir),
            decoding.compute_type,
            str(decoding.beam_size),
            str(threads),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(json.loads(out.strip().splitlines()[-1])["rss_bytes"])


def _rss_main(model_dir: str, compute_type: str, beam_size: str, threads: str) -> None:
    transcribe = Transcriber(Path(model_dir), Decoding(compute_type, int(beam_size)), int(threads))
    transcribe(np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE).astype(np.float32))
    rss = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    print(json.dumps({"rss_bytes": rss}))


def scores_json(scores: Scores) -> dict[str, object]:
    doc = asdict(scores)
    doc["rtf"] = scores.rtf
    return doc


if __name__ == "__main__":
    if sys.argv[1:2] == ["rss"]:
        _rss_main(*sys.argv[2:6])
    else:
        raise SystemExit("usage: python -m modelprep.families.speech.measure rss MODEL_DIR COMPUTE_TYPE BEAM THREADS")
