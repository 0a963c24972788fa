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

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from iac.spec.errors import UserError
from iac.spec.models import DEFAULT_MAX_KL, Metric
from modelprep.families.llm import quantize
from modelprep.family import Candidate, Quality, Variant

if TYPE_CHECKING:
    from iac.spec.models import ResolvedSpec
    from modelprep.cache import Cache
    from modelprep.families.llm.metadata import GgufInfo
    from modelprep.family import Progress, Step
    from modelprep.report import Measure
    from modelprep.request import PrepRequest

KL = Quality(name="kl", lower_is_better=True, percent=False)
VERSION = 3  # bump when building or measuring a variant changes: its cached measures are rebuilt
ARTIFACT = "model.gguf"


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


FAMILY = LlmFamily()
