"""The speech evaluation set: synthetic clips of real prose, with their transcripts, in one file.

No recorded speech with transcripts ships in a package this project can install, so the set is
made: sentences from the licence texts Debian ships in ``/usr/share/common-licenses`` (GPL, LGPL,
Apache, GFDL, MPL, Artistic: real prose the project did not write, present on every Debian
machine, never downloaded) are spoken by Debian's ``espeak-ng`` and ``flite`` at several voices
and speeds; every fourth clip gets white noise at ``NOISE_SNR_DB``. The audio is synthetic and
robotic: absolute word error rates here are not those of human speech, but the *differences*
between variants of one model on the same clips are what the gate reads.

Made once by ``python -m modelprep.families.speech.corpus OUT.npz [--clips N]`` (deterministic
for a given machine's espeak-ng/flite); the file holds each clip as 16 kHz mono float32 plus its
metadata (text, voice, speed, SNR). Whisper may have seen these licences in training: they are
held out from this project, not necessarily from the model's training data.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

LICENCES = ("GPL-3", "GPL-2", "LGPL-2.1", "LGPL-3", "Apache-2.0", "GFDL-1.3", "MPL-2.0", "Artistic")
LICENCE_DIR = Path("/usr/share/common-licenses")
SAMPLE_RATE = 16_000
NOISE_SNR_DB = 20.0
# (engine, voice, speed in words per minute; flite has no speed flag: None)
VOICES: tuple[tuple[str, str, int | None], ...] = (
    ("espeak-ng", "en-us", 150),
    ("espeak-ng", "en-gb", 140),
    ("flite", "slt", None),
    ("espeak-ng", "en-gb-x-rp", 165),
    ("flite", "rms", None),
    ("espeak-ng", "en-us", 175),
    ("flite", "awb", None),
    ("espeak-ng", "en-029", 150),
)
# Letters, spaces and light punctuation only: digits and acronyms have several right spellings.
_SENTENCE = re.compile(r"[A-Z][A-Za-z ,;'\-]+[.]")
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")


@dataclass(frozen=True)
class Clip:
    """One clip's metadata; its audio is ``audio[offset:offset + samples]`` of the set."""

    text: str
    engine: str
    voice: str
    speed: int | None
    snr_db: float | None
    offset: int
    samples: int


@dataclass(frozen=True)
class EvaluationSet:
    """Clips as one 16 kHz float32 array plus where each clip lies in it."""

    audio: np.ndarray
    clips: tuple[Clip, ...]

    def clip(self, index: int) -> np.ndarray:
        c = self.clips[index]
        return self.audio[c.offset : c.offset + c.samples]

    @property
    def seconds(self) -> float:
        return sum(c.samples for c in self.clips) / SAMPLE_RATE

    def head(self, n: int) -> EvaluationSet:
        """The first ``n`` clips (tests and quick runs)."""
        return EvaluationSet(self.audio, self.clips[:n])


def sentences(licence_dir: Path = LICENCE_DIR) -> list[str]:
    """Distinct sentences of 6-24 words from the licence texts, in file order."""
    text = " ".join((licence_dir / name).read_text(encoding="utf-8") for name in LICENCES)
    seen: set[str] = set()
    found: list[str] = []
    for raw in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
        sentence = re.sub(r'["()]', "", raw).strip()
        if not _SENTENCE.fullmatch(sentence) or _ACRONYM.search(sentence):
            continue
        if 6 <= len(sentence.split()) <= 24 and sentence.lower() not in seen:
            seen.add(sentence.lower())
            found.append(sentence)
    return found


def speak(text: str, engine: str, voice: str, speed: int | None, wav: Path) -> None:
    """Write ``text`` spoken by ``engine`` to ``wav`` (the engine's own sample rate)."""
    if engine == "espeak-ng":
        command = ["espeak-ng", "-v", voice, "-s", str(speed or 160), "-w", str(wav), text]
    else:
        command = ["flite", "-voice", voice, "-t", text, "-o", str(wav)]
    subprocess.run(command, check=True, capture_output=True)


def read_wav(path: Path) -> np.ndarray:
    """A WAV file as 16 kHz mono float32, decoded and resampled by the server's own decoder."""
    from serving.speech.audio import decode

    return decode(path.read_bytes(), max_seconds=600.0).samples


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """Mono float32 samples as a 16-bit PCM WAV file (the standard library writes it): a clip as a
    client uploads it."""
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at ``snr_db`` below the clip's mean power."""
    power = float(np.mean(samples.astype(np.float64) ** 2)) or 1e-8
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), samples.shape)
    return np.clip(samples + noise, -1.0, 1.0).astype(np.float32)


def make(n_clips: int, seed: int = 0) -> EvaluationSet:
    """``n_clips`` clips, cycling through the sentences and the voices."""
    for tool in ("espeak-ng", "flite"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed; run scripts/asr_setup.sh")
    rng = np.random.default_rng(seed)
    texts = sentences()
    pieces: list[np.ndarray] = []
    clips: list[Clip] = []
    offset = 0
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        for i in range(n_clips):
            # Sentence i with voice (i + i // len(texts)): a sentence heard twice gets another voice.
            engine, voice, speed = VOICES[(i + i // len(texts)) % len(VOICES)]
            text = texts[i % len(texts)]
            speak(text, engine, voice, speed, wav)
            samples = read_wav(wav)
            snr = NOISE_SNR_DB if i % 4 == 3 else None
            if snr is not None:
                samples = add_noise(samples, snr, rng)
            pieces.append(samples)
            clips.append(Clip(text, engine, voice, speed, snr, offset, len(samples)))
            offset += len(samples)
    return EvaluationSet(np.concatenate(pieces), tuple(clips))


def save(dataset: EvaluationSet, path: Path) -> None:
    """One ``.npz``: the audio as int16 (half the bytes; the synthesisers write 16-bit anyway)."""
    meta = json.dumps([asdict(c) for c in dataset.clips])
    pcm = np.round(np.clip(dataset.audio, -1.0, 1.0) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, audio=pcm, clips=np.frombuffer(meta.encode(), dtype=np.uint8))


def load(path: Path) -> EvaluationSet:
    with np.load(path) as data:
        audio = data["audio"].astype(np.float32) / 32767.0
        meta = json.loads(data["clips"].tobytes().decode())
    return EvaluationSet(audio, tuple(Clip(**m) for m in meta))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--clips", type=int, default=240)
    args = parser.parse_args(argv)
    dataset = make(args.clips)
    save(dataset, args.out)
    print(f"{args.out}: {len(dataset.clips)} clips, {dataset.seconds:.1f} s of audio")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
