"""The llm family's contract with the prep loop: a GGUF language model (model.format gguf, model.task
text-generation).

Variants are the source file as given and llama.cpp re-quantizations of it (`quantize.CATALOGUE`).
Quality is measured against the source model on held-out text: the mean KL divergence of the
next-token distributions (the gated metric, `optimize.max_kl`), top-1 agreement (optionally gated,
`optimize.min_agreement`) and perplexity; speed as prompt and generation tokens/s at
`serving.threads`, memory as the peak RSS with `serving.context_length`. The chat template,
context length, vocabulary and special tokens come from the file's metadata (`metadata.read`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from iac.spec.errors import UserError
from iac.spec.models import DEFAULT_MAX_KL, Metric
from modelprep.families.llm import quantize
from modelprep.family import Candidate, Quality, ServingNeeds, SpecProblem, Variant

if TYPE_CHECKING:
    from pathlib import Path

    from iac.spec.models import ModelSpec, ResolvedSpec
    from modelprep.cache import Cache
    from modelprep.families.llm.metadata import GgufInfo
    from modelprep.family import Progress, Step, Written
    from modelprep.report import Measure, PrepReport
    from modelprep.request import PrepRequest

KL = Quality(name="kl", lower_is_better=True, percent=False)
VERSION = 3  # bump when building or measuring a variant changes: its cached measures are rebuilt
ARTIFACT = "model.gguf"

# A replica's memory (`serving_needs`): the weights (mapped from the file), the KV cache llama.cpp
# allocates up front for context_length x max_sequences tokens (float16 keys and values, its default),
# and the server process with llama.cpp's compute buffers: 53-77 MiB resident measured here beside the
# first two (tiny model, SmolLM2 at 2,048 and 8,192 tokens x 4 sequences), so 96 MiB; then 10% more.
KV_ELEMENT_BYTES = 2
RUNTIME_BYTES = 96 * 2**20
MEMORY_MARGIN = 1.10
# How long a draining replica lets its streams run: as long as the longest answer takes when every
# sequence generates at once (no batching gain assumed), within these bounds.
MIN_DRAIN_S, MAX_DRAIN_S = 9.0, 600.0


def _variant(q: quantize.Quant) -> Variant:
    return Variant(
        name=q.name,
        runtime="llama.cpp",
        technique="source" if q.ftype is None else "requantize",
        quantization=(q.ftype or "source").lower(),
        description=q.description,
        artifact_file=ARTIFACT,
    )


def max_kl(req: PrepRequest) -> float:
    return req.optimize.max_kl if req.optimize.max_kl is not None else DEFAULT_MAX_KL


def resolve_context(written: int | None, info: GgufInfo, where: str) -> int:
    """Tokens per sequence: as written, or (0 / unset) the context the model was trained for; more
    than that is refused at serving.context_length."""
    if written and written > info.context_length:
        raise UserError.single(
            where,
            "serving.context_length",
            f"{written} tokens is more than {info.name} was trained for ({info.context_length})",
            f"use at most {info.context_length}, or 0 for the model's own",
        )
    return written or info.context_length


class LlmFamily:
    name: str = "llm"
    formats: tuple[str, ...] = ("gguf",)
    tasks: tuple[str, ...] = ("text-generation",)
    catalogue: Mapping[str, Variant] = MappingProxyType({name: _variant(q) for name, q in quantize.CATALOGUE.items()})
    honours: frozenset[str] = frozenset(
        {"objective", "metric", "variants", "max_kl", "min_agreement", "evaluation_tokens"}
    )
    metrics: Mapping[str, Quality] = MappingProxyType({"kl": KL})
    baseline: str = "llama.cpp"
    reference: str | None = None  # the source is a variant itself (gguf-source), measured like the others
    gentle: tuple[str, ...] = ("gguf-source", "gguf-q8_0", "gguf-q6_k")
    gate_field: str = "optimize.max_kl"  # where the spec sets the gate's allowance (the request copies it)
    requirements: Mapping[str, str] = MappingProxyType({"llama.cpp": "requirements-llm.txt"})

    def spec_problems(self, spec: ModelSpec, folder: Path, written: Written) -> list[SpecProblem]:
        return []  # its metric is checked when the request is made (it reads the GGUF file)

    def request(self, spec: ResolvedSpec, all_variants: bool = False) -> PrepRequest:
        from modelprep.families.llm.metadata import read
        from modelprep.request import PrepRequest

        o = spec.spec.optimize
        if o.metric not in (Metric.accuracy, Metric.kl):  # accuracy: the spec's default, i.e. not written
            raise UserError.single(
                spec.where("optimize.metric"),
                "optimize.metric",
                f'"{o.metric.value}" does not score a text-generation model',
                "use metric: kl (or leave it out); gate with optimize.max_kl",
            )
        info = read(spec.model_path, spec.where("model.path"))
        # serving.context_length is the server's setting (0: the model's own); read it where it exists.
        context = resolve_context(
            getattr(spec.spec.serving, "context_length", 0), info, spec.where("serving.context_length")
        )
        return PrepRequest(
            family=self.name,
            input_dtype="string",
            family_settings={"context_length": context},
            model_path=spec.model_path,
            model_sha256=spec.spec.model.sha256,
            calibration_path=spec.calibration_path,
            evaluation_path=spec.evaluation_path,
            input_name="prompt",
            sample_shape=(),
            # The shared gate reads metric and max_accuracy_drop: for this family they are kl and max_kl.
            optimize=o.model_copy(
                update={"metric": Metric.kl, "max_accuracy_drop": o.max_kl if o.max_kl is not None else DEFAULT_MAX_KL}
            ),
            threads=spec.spec.serving.threads,
            all_variants=all_variants,
            locations=spec.locations,
        )

    def candidates(self, req: PrepRequest) -> list[Candidate]:
        o = req.optimize
        names = (
            list(self.catalogue)
            if req.all_variants
            else ([v.value for v in o.variants] if o.variants is not None else list(quantize.DEFAULT))
        )
        foreign = [n for n in names if n not in self.catalogue]
        if foreign:
            raise UserError.single(
                req.where("optimize.variants"),
                "optimize.variants",
                f"{', '.join(foreign)} cannot be made from a GGUF model",
                f"use some of {', '.join(self.catalogue)}",
            )
        return [Candidate(self.catalogue[n], eligible=True) for n in self.catalogue if n in names]

    def variant_settings(self, req: PrepRequest, variant: Variant) -> dict[str, Any]:
        from iac.spec.models import DEFAULT_EVALUATION_TOKENS
        from modelprep.families.llm.session import WINDOW, context_length
        from modelprep.families.llm.speed import NEW_TOKENS, PROMPT_TOKENS

        return {
            "version": VERSION,
            "ftype": quantize.CATALOGUE[variant.name].ftype,
            "context_length": context_length(req),
            "evaluation_tokens": req.optimize.evaluation_tokens or DEFAULT_EVALUATION_TOKENS,
            "window": WINDOW,
            "prompt_tokens": PROMPT_TOKENS,
            "new_tokens": NEW_TOKENS,
            "threads": req.threads,
        }

    def baseline_settings(self, req: PrepRequest) -> dict[str, Any]:
        """The baseline is the source measured as gguf-source is: over the same tokens, at the same context."""
        return self.variant_settings(req, self.catalogue[quantize.SOURCE])

    def judge(self, req: PrepRequest, measure: Measure) -> str | None:
        """The second gate: top-1 agreement under optimize.min_agreement."""
        floor = req.optimize.min_agreement
        agreement = measure.notes.top1_agreement
        if floor is not None and agreement is not None and agreement < floor:
            return f"top-1 agreement {agreement:.4f} is below optimize.min_agreement {floor}"
        return None

    def input_ranges(self, req: PrepRequest) -> dict[str, tuple[int, int]]:
        return {}  # no integer ids in its signature

    def session(self, req: PrepRequest, cache: Cache, progress: Progress, step: Step) -> Any:
        from modelprep.families.llm.session import LlmSession

        return LlmSession(req, progress, step)

    def serving_needs(self, spec: ResolvedSpec, report: PrepReport, artifact: Path) -> ServingNeeds:
        """Memory: the chosen file's weights + its KV cache (context_length x max_sequences x layers x KV
        heads x (key + value length) x 2 bytes, from the GGUF's metadata) + the runtime; drain: the
        longest answer (a whole context) at the measured generation speed shared by every sequence."""
        from modelprep.families.llm.metadata import cache_shape

        shape = cache_shape(artifact)
        chosen = report.chosen.notes
        sequences = int(getattr(spec.spec.serving, "max_sequences", 1))
        context = chosen.context_length or resolve_context(
            getattr(spec.spec.serving, "context_length", 0), _info(artifact), spec.where("serving.context_length")
        )
        per_token = shape.bytes_per_token(KV_ELEMENT_BYTES)
        kv = context * sequences * per_token
        need = math.ceil((report.size_bytes + kv + RUNTIME_BYTES) * MEMORY_MARGIN / 2**20) * 2**20
        detail = (
            f"weights {_mib(report.size_bytes)} + KV cache {_mib(kv)} ({context:,} tokens x {sequences} sequences x "
            f"{per_token:,} bytes: {shape.layers} layers x {shape.kv_heads} KV heads x "
            f"({shape.key_length} + {shape.value_length}) x {KV_ELEMENT_BYTES} bytes) + runtime {_mib(RUNTIME_BYTES)}, "
            f"+{round((MEMORY_MARGIN - 1) * 100)}%"
        )
        speed = chosen.generation_tokens_per_s or report.throughput_per_s
        longest = context * sequences / speed if speed > 0 else MAX_DRAIN_S
        return ServingNeeds(need, detail, float(min(max(math.ceil(longest), MIN_DRAIN_S), MAX_DRAIN_S)))


def _info(artifact: Path) -> GgufInfo:
    from modelprep.families.llm.metadata import read

    return read(artifact)


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


FAMILY = LlmFamily()
