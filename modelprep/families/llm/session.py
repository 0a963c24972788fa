"""One prep run of a GGUF language model: re-quantize, then measure each variant against the source.

Every variant is scored on the same windows of the evaluation text against the source model's
next-token distributions (`evaluate.Reference`, computed once per run and only when a variant
needs measuring) and timed in a child process at `serving.threads` and the configured context
(`speed`). The artifacts are the GGUF files themselves: the server loads the chosen one as is.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from iac.spec.models import DEFAULT_EVALUATION_TOKENS, Metric
from modelprep.families.llm import quantize
from modelprep.family import Baselines, Measured, Variant
from modelprep.family import Notes as NoteFields
from modelprep.hashing import file_sha256
from modelprep.report import Measure, Notes
from modelprep.request import PrepRequest

WINDOW = 1024  # tokens per evaluation window (fewer when the context is shorter)


def context_length(req: PrepRequest) -> int:
    """Tokens per sequence, as the request resolved it from serving.context_length and the GGUF."""
    return int(req.family_settings["context_length"])


class LlmSession:
    def __init__(self, req: PrepRequest, progress: Any, step: Any) -> None:
        self.req, self.progress, self.step = req, progress, step
        self.source = Path(req.model_path)
        self.work = Path(tempfile.mkdtemp(prefix="modelstack-llm-"))
        weakref.finalize(self, shutil.rmtree, str(self.work), True)
        self.files: dict[str, Path] = {quantize.SOURCE: self.source}
        self._reference: Any = None
        self._timed: dict[Path, Any] = {}

    @property
    def context(self) -> int:

        return context_length(self.req)

    def reference(self) -> Any:
        """The source's log-probabilities over the evaluation windows (made on first use)."""
        if self._reference is None:
            from modelprep.families.llm.evaluate import Reference, load, windows

            tokens = self.req.optimize.evaluation_tokens or DEFAULT_EVALUATION_TOKENS
            text = Path(self.req.evaluation_path).read_text(encoding="utf-8")
            size = min(WINDOW, self.context)
            tokenizer = load(self.source, context=size, threads=self.req.threads, logits_all=False)
            win = windows(tokenizer, text, window=size, tokens=tokens)
            del tokenizer
            self.progress(f"source model over {win.total:,} held-out tokens ({len(win.tokens)} windows of {size})")
            self._reference = Reference(self.work / "reference.npy", self.source, win, self.req.threads)
        return self._reference

    def evaluation_samples(self) -> int:
        return int(self.reference().windows.total)

    def baselines(self) -> Baselines:
        """The source file as given, measured like every variant (KL 0 and agreement 1 by definition)."""
        variant = Variant(
            name=quantize.SOURCE,
            runtime="llama.cpp",
            technique="baseline",
            quantization="source",
            description="the GGUF as given",
            artifact_file="model.gguf",
        )
        measured = self.measure(variant, b"", {"tensor_types": quantize.tensor_types(self.source)}, None)
        return Baselines([measured.measure.model_copy(update={"baseline": True, "name": "llama.cpp"})])

    def build(self, variants: Sequence[Variant]) -> Iterator[tuple[Variant, bytes, NoteFields]]:
        for variant in variants:
            quant = quantize.CATALOGUE[variant.name]
            if quant.ftype is None:
                path = self.source
            else:
                self.progress(f"quantizing to {quant.ftype} with llama.cpp")
                path = quantize.requantize(self.source, self.work / f"{variant.name}.gguf", quant, self.req.threads)
            self.files[variant.name] = path
            yield variant, path.read_bytes(), {"tensor_types": quantize.tensor_types(path)}

    def _file(self, variant: Variant, artifact: bytes) -> Path:
        path = self.files.get(variant.name)
        if path is None:  # bytes handed back from the cache: put them where llama.cpp can map them
            path = self.work / f"{variant.name}.gguf"
            path.write_bytes(artifact)
            self.files[variant.name] = path
        return path

    def measure(self, variant: Variant, artifact: bytes, notes: NoteFields, reference: Any) -> Measured:
        import numpy as np

        from modelprep.families.llm import speed

        path = self._file(variant, artifact)
        ref = self.reference()
        if path != self.source:
            self.progress(f"comparing {variant.name} with the source over {ref.windows.total:,} tokens")
        # The source was read once to make the reference; reading it again would give the same logits.
        tally = ref.tally if path == self.source else ref.compare(path, self.req.threads)
        self.progress(
            f"timing {variant.name}: prompt and generation at {self.req.threads} thread(s), context {self.context}"
        )
        timed = self._timed.get(path) or speed.measure(
            path, Path(self.req.evaluation_path), context=self.context, threads=self.req.threads
        )
        self._timed[path] = timed  # the baseline and gguf-source are one file: timed once
        size = path.stat().st_size
        per_token_us = 1e6 / timed.generation_tokens_per_s if timed.generation_tokens_per_s > 0 else 0.0
        measure = Measure(
            name=variant.name,
            runtime=variant.runtime,
            technique=variant.technique,
            quantization=variant.quantization,
            description=variant.description,
            artifact_file=variant.artifact_file,
            sha256=file_sha256(path),
            size_bytes=size,
            gzip_bytes=size,  # quantized weights do not compress; gzipping 100s of MB would only cost time
            metric=Metric.kl,
            accuracy=round(tally.mean_kl, 6),
            latency_p50_us=round(per_token_us, 1),
            latency_p99_us=round(per_token_us, 1),
            throughput_per_s=timed.generation_tokens_per_s,
            latency_calls=timed.generated_tokens,
            threads=self.req.threads,
            notes=Notes.model_validate(
                {
                    **notes,
                    "kl_p99": round(tally.kl_p99, 6),
                    "top1_agreement": round(tally.agreement, 6),
                    "perplexity": round(tally.perplexity, 4),
                    "scored_tokens": tally.tokens,
                    "prompt_tokens_per_s": timed.prompt_tokens_per_s,
                    "generation_tokens_per_s": timed.generation_tokens_per_s,
                    "peak_rss_bytes": timed.peak_rss_bytes,
                    "context_length": self.context,
                }
            ),
        )
        # Its "outputs": the KL at every scored position, so the spread is kept, not just the mean.
        return Measured(measure, np.concatenate(tally.kls).astype(np.float32) if tally.kls else np.zeros(0, np.float32))
