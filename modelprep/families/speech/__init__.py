"""The ``speech`` family: a Whisper model in CTranslate2's format, prepped by choosing how it runs.

CTranslate2 converts the weights to the compute type when it loads them, so every variant ships
the same files: a variant is a compute type (float32, int8, int8_float32) × a decoding (greedy or
beam 5), stored as the small settings document the server reads (``speech.json``). The artifact is
a folder (``whisper/``): every file of the model folder plus the chosen variant's ``speech.json``;
its sha256 is the folder's (``modelprep.hashing.tree_sha256``), and render ships it whole. What
differs between variants is measured: resident memory, real-time factor at ``serving.threads`` and
word error rate on the evaluation clips (``data.evaluation``, made by ``python -m
modelprep.families.speech.corpus``). The gate reads WER as lower-is-better: ``optimize.max_accuracy_drop`` is the largest accepted absolute increase over
``ct2-float32`` (float32, greedy: the model as given with the plainest decoding).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelprep.family import Baselines, Candidate, Measured, Quality, ServingNeeds, SpecProblem, Variant
from serving.speech import SETTINGS_FILE

if TYPE_CHECKING:
    import numpy as np

    from iac.spec.models import ModelSpec, ResolvedSpec
    from modelprep.cache import Cache
    from modelprep.families.speech.corpus import EvaluationSet
    from modelprep.families.speech.measure import Decoding, Scores
    from modelprep.family import Notes, Progress, Step, Written
    from modelprep.report import Measure, PrepReport
    from modelprep.request import PrepRequest

RUNTIME = "ctranslate2"
ARTIFACT = "whisper"  # a folder: the model's files and SETTINGS_FILE
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


def _variant(compute_type: str, beam: int) -> Variant:
    decoding = "greedy" if beam == 1 else f"beam search, {beam} beams"
    name = f"ct2-{compute_type}" + ("" if beam == 1 else f"-beam{beam}")
    return Variant(
        name,
        RUNTIME,
        "baseline" if name == "ct2-float32" else "ptq",
        compute_type,
        f"CTranslate2 {compute_type} weights, {decoding}",
        artifact_file=ARTIFACT,
    )


CATALOGUE: dict[str, Variant] = {
    v.name: v for v in (_variant(c, b) for c in ("float32", "int8", "int8_float32") for b in (1, 5))
}
BASELINE = "ct2-float32"
WER = Quality("wer", lower_is_better=True, percent=True)

# A replica's needs (`serving_needs`). Memory: the variant's resident memory as prep measured it in a fresh
# process, the server around it (Python, PyAV, the VAD's ONNX Runtime), one request's audio at the limit
# (16 kHz float32 samples, their resampled copy and the log-mel windows: 3 x 64 KB per second), +25%.
SERVER_BYTES = 160 * 2**20
AUDIO_BYTES_PER_S = 3 * 16_000 * 4
MEMORY_MARGIN = 1.25
# Drain: the transcriptions a replica holds when it is told to stop (the one it runs, one queued), each up
# to serving.max_audio_seconds at the measured real-time factor (1.0 when prep recorded none).
HELD_REQUESTS = 2
MIN_DRAIN_S, MAX_DRAIN_S = 9.0, 600.0


def settings_of(variant: Variant) -> dict[str, Any]:
    """What the server is told to run for ``variant`` (``speech.json`` in the shipped folder)."""
    beam = 5 if variant.name.endswith("-beam5") else 1
    return {"compute_type": variant.quantization, "beam_size": beam}


def decoding_of(variant: Variant) -> Decoding:
    from modelprep.families.speech.measure import Decoding

    s = settings_of(variant)
    return Decoding(s["compute_type"], s["beam_size"])


def model_bytes(model_dir: Path) -> int:
    return sum((model_dir / name).stat().st_size for name in MODEL_FILES if (model_dir / name).exists())


def settings_bytes(variant: Variant) -> bytes:
    """The variant as the file the server reads (``SETTINGS_FILE`` in the shipped folder)."""
    return json.dumps(settings_of(variant), sort_keys=True).encode()


def model_files(model_dir: Path) -> dict[str, Path]:
    """Every file of the model folder by relative name (what the prep key hashed, so what ships)."""
    return {
        p.relative_to(model_dir).as_posix(): p
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and p.relative_to(model_dir).as_posix() != SETTINGS_FILE
    }


def measure_of(
    variant: Variant,
    scores: Scores,
    size: int,
    gzip_bytes: int,
    rss: int,
    threads: int,
    eligible: bool = True,
    reason: str | None = None,
    sha256: str | None = None,
) -> Measure:
    """A report row for a scored variant (the metric is WER, in ``accuracy`` as every family's metric is);
    ``sha256`` is its artifact's (the shipped folder's), which a chosen variant's row must carry."""
    from iac.spec.models import Metric
    from modelprep.report import Measure, Notes

    per_clip = sorted(scores.clip_seconds)
    return Measure(
        name=variant.name,
        runtime=RUNTIME,
        technique=variant.technique,
        quantization=variant.quantization,
        description=variant.description,
        artifact_file=ARTIFACT,
        sha256=sha256,
        size_bytes=size,
        gzip_bytes=gzip_bytes,
        metric=Metric.wer,
        accuracy=round(scores.wer, 6),
        latency_p50_us=round(scores.percentile_ms(50) * 1000, 1),
        latency_p99_us=round(scores.percentile_ms(99) * 1000, 1),
        throughput_per_s=round(len(per_clip) / scores.compute_seconds, 3) if scores.compute_seconds else 0.0,
        latency_calls=len(per_clip),
        threads=threads,
        notes=Notes(
            resident_bytes=rss, real_time_factor=round(scores.rtf, 4), beam_size=decoding_of(variant).beam_size
        ),
        baseline=variant.name == BASELINE,
        eligible=eligible,
        not_eligible_because=reason,
    )


@dataclass
class SpeechSession:
    """One prep run: loads the evaluation clips and each variant only when asked."""

    model_dir: Path
    evaluation_path: Path
    threads: int
    progress: Progress = field(default=lambda _: None)
    _dataset: EvaluationSet | None = None
    _gzip: int | None = None
    _file_shas: dict[str, str] | None = None
    _scored: dict[str, Scores] = field(default_factory=dict)

    @property
    def dataset(self) -> EvaluationSet:
        if self._dataset is None:
            from modelprep.families.speech.corpus import load

            self._dataset = load(self.evaluation_path)
        return self._dataset

    def evaluation_samples(self) -> int:
        return len(self.dataset.clips)

    def gzip_bytes(self) -> int:
        """The model files gzipped (what a registry would move), once per run."""
        if self._gzip is None:
            import zlib

            total = 0
            for name in MODEL_FILES:
                path = self.model_dir / name
                if path.exists():
                    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
                    with path.open("rb") as f:
                        while chunk := f.read(1 << 22):
                            total += len(compressor.compress(chunk))
                    total += len(compressor.flush())
            self._gzip = total
        return self._gzip

    def shipped_sha256(self, variant: Variant) -> str:
        """sha256 of the folder shipped for ``variant``: the model's files and its settings file."""
        from modelprep.hashing import file_sha256, tree_sha256

        if self._file_shas is None:
            self._file_shas = {name: file_sha256(path) for name, path in model_files(self.model_dir).items()}
        settings = hashlib.sha256(settings_bytes(variant)).hexdigest()
        return tree_sha256({**self._file_shas, SETTINGS_FILE: settings})

    def score(self, variant: Variant) -> Scores:
        from modelprep.families.speech.measure import Transcriber, score

        # Once per variant and run: the baseline (float32, greedy) is also the catalogue's ct2-float32.
        if variant.name not in self._scored:
            self.progress(f"measuring {variant.name} on {len(self.dataset.clips)} clips")
            transcriber = Transcriber(self.model_dir, decoding_of(variant), self.threads)
            self._scored[variant.name] = score([transcriber], self.dataset)[0]
        return self._scored[variant.name]

    def row(self, variant: Variant, scores: Scores) -> Measure:
        from modelprep.families.speech.measure import resident_bytes

        rss = resident_bytes(self.model_dir, decoding_of(variant), self.threads)
        size = model_bytes(self.model_dir)
        sha = self.shipped_sha256(variant)  # the folder's: what the report and the image label name
        return measure_of(variant, scores, size, self.gzip_bytes(), rss, self.threads, sha256=sha)

    def clip_wers(self, scores: Scores) -> np.ndarray:
        """Each clip's word error rate, in clip order: a variant's outputs as the prep loop keeps them
        (float32, like the llm family's KL per position), the spread behind the corpus WER."""
        import numpy as np

        from modelprep.families.speech.wer import wer

        pairs = zip(self.dataset.clips, scores.texts, strict=True)
        return np.array([wer([clip.text], [text]) for clip, text in pairs], dtype=np.float32)

    # --- modelprep.family.Session ---
    def baselines(self) -> Baselines:
        """float32 with greedy decoding; no outputs: WER compares with the transcripts, not with them."""
        variant = CATALOGUE[BASELINE]
        return Baselines([self.row(variant, self.score(variant))])

    def build(self, variants: Sequence[Variant]) -> Iterator[tuple[Variant, bytes, Notes]]:
        for variant in variants:
            yield variant, settings_bytes(variant), {}

    def measure(self, variant: Variant, artifact: bytes, notes: Notes, reference: Any) -> Measured:
        scores = self.score(variant)
        return Measured(self.row(variant, scores), self.clip_wers(scores))


class SpeechFamily:
    name = "speech"
    formats = ("ctranslate2",)
    tasks = ("speech-recognition",)
    catalogue: Mapping[str, Variant] = CATALOGUE
    honours = frozenset({"objective", "metric", "max_accuracy_drop", "variants"})
    metrics: Mapping[str, Quality] = {"wer": WER}
    baseline = "faster-whisper"
    reference: str | None = BASELINE
    gentle = ("ct2-int8_float32", "ct2-float32-beam5")
    gate_field = "optimize.max_accuracy_drop"  # the absolute WER increase allowed over float32
    requirements: Mapping[str, str] = {RUNTIME: "requirements-speech.txt"}

    def spec_problems(self, spec: ModelSpec, folder: Path, written: Written) -> list[SpecProblem]:
        return []  # its metric and variants are checked with the candidates

    def judge(self, req: PrepRequest, measure: Measure) -> str | None:
        return None  # WER is the one gate

    def input_ranges(self, req: PrepRequest) -> dict[str, tuple[int, int]]:
        return {}  # no integer ids in its signature

    def request(self, spec: ResolvedSpec, all_variants: bool = False) -> PrepRequest:
        from modelprep.request import PrepRequest

        return PrepRequest(
            model_path=spec.model_path,
            model_sha256=spec.spec.model.sha256,
            calibration_path=spec.evaluation_path,
            evaluation_path=spec.evaluation_path,
            input_name="audio",
            sample_shape=(),
            optimize=spec.spec.optimize,
            threads=spec.spec.serving.threads,
            all_variants=all_variants,
            locations=spec.locations,
        )

    def candidates(self, req: PrepRequest) -> list[Candidate]:
        from iac.spec.errors import UserError

        wanted = [v.value for v in req.optimize.variants] if req.optimize.variants else list(CATALOGUE)
        foreign = [name for name in wanted if name not in CATALOGUE]
        if foreign:
            raise UserError.single(
                req.where("optimize.variants"),
                "optimize.variants",
                f"{', '.join(foreign)} cannot be made from a CTranslate2 Whisper model",
                f"use some of {', '.join(CATALOGUE)}",
            )
        if req.optimize.metric.value != "wer":
            raise UserError.single(
                req.where("optimize.metric"),
                "optimize.metric",
                f"{req.optimize.metric.value} does not apply to speech recognition",
                "use wer (word error rate; max_accuracy_drop is its largest accepted increase)",
            )
        return [Candidate(CATALOGUE[name], True) for name in CATALOGUE if name in wanted]

    def variant_settings(self, req: PrepRequest, variant: Variant) -> dict[str, Any]:
        return settings_of(variant)

    def artifact_files(self, req: PrepRequest, candidate: bytes) -> dict[str, bytes]:
        """The shipped folder: every file of the model folder, and the chosen variant's settings."""
        files = {name: path.read_bytes() for name, path in model_files(Path(req.model_path)).items()}
        return {**files, SETTINGS_FILE: candidate}

    def session(self, req: PrepRequest, cache: Cache, progress: Progress, step: Step) -> SpeechSession:
        return SpeechSession(Path(req.model_path), Path(req.evaluation_path), req.threads, progress)

    def serving_needs(self, spec: ResolvedSpec, report: PrepReport, artifact: Path) -> ServingNeeds:
        """A replica's memory and drain from the chosen variant's measured resident memory and real-time
        factor and the spec's serving.max_audio_seconds (the constants above say how)."""
        notes = report.chosen.notes
        longest_s = float(spec.spec.serving.max_audio_seconds)
        resident = notes.resident_bytes or report.size_bytes
        audio = int(longest_s * AUDIO_BYTES_PER_S)
        need = math.ceil((resident + SERVER_BYTES + audio) * MEMORY_MARGIN / 2**20) * 2**20
        detail = (
            f"model resident {resident / 2**20:,.0f} MiB + server {SERVER_BYTES / 2**20:,.0f} MiB + "
            f"{longest_s:g} s of audio {audio / 2**20:,.0f} MiB, +{round((MEMORY_MARGIN - 1) * 100)}%"
        )
        rtf = notes.real_time_factor or 1.0
        drain = math.ceil(HELD_REQUESTS * longest_s * rtf)
        return ServingNeeds(need, detail, float(min(max(drain, MIN_DRAIN_S), MAX_DRAIN_S)))


FAMILY = SpeechFamily()
