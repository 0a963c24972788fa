"""The model-family contract: what one kind of model brings to the one prep loop (`modelprep.prep`).

A family is a package `modelprep/families/<name>/` whose module exposes `FAMILY`, an object that
satisfies `Family` below, and is named in the registry `modelprep/families/__init__.py`. The
prep loop, the keys, the cache layout, the gate, the report and the chart are the same for every
family; a family says only what differs:

- what it loads (`formats`, `tasks`) and how a resolved spec becomes its `PrepRequest` (`request`);
- its variant catalogue (`catalogue`) and which of them a request tries (`candidates`);
- the `optimize` fields it honours (`honours`; any other field set in the spec is refused);
- how one run builds, measures and baselines its variants (`session` → `Session`), measuring
  with the runtime the server loads (`Variant.runtime`);
- its quality metrics and how the gate reads them (`metrics` → `Quality`);
- what only it decides about a spec, e.g. the data files it reads (`spec_problems`), and the
  serving image's packages for each runtime its variants run on (`requirements`);
- optionally, what a replica needs to serve the chosen variant (`serving_needs(spec, report, artifact)`
  → `ServingNeeds`: the least memory, the drain on SIGTERM), which the deploy targets size replicas
  with; a family without it is served with the spec's limits and the server's default drain;
- optionally, what its baseline's measuring reads beyond the request's data and metric
  (`baseline_settings(req) -> dict`, part of the baselines' cache key);
- optionally, that its artifact is a folder: `artifact_files(req, candidate) -> dict[str, bytes]`
  names every file of it (relative names) for the chosen candidate's bytes; the result entry then
  holds the folder `<artifact_file>/`, shipped whole into the image, and the candidate's `sha256`
  must be that folder's (`modelprep.hashing.tree_sha256`). Without it the artifact is one file.

The contract is a `typing.Protocol` (structural) so a family is plain code with no base class
to inherit and no import of the loop; the loop imports a family only by its registry name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from iac.spec.models import ModelSpec, ResolvedSpec
    from modelprep.cache import Cache
    from modelprep.report import Measure
    from modelprep.request_model import PrepRequest

Progress = Callable[[str], None]
Step = Callable[[str, int, int], None]  # (task, done, total): drives progress bars
Notes = dict[str, Any]  # what a technique says about the variant it made (modelprep.report.Notes fields)
Loc = tuple[str | int, ...]  # a field of the spec, e.g. ("data", "evaluation")
Written = Callable[[Loc], bool]  # whether the user wrote a field (a default was not written)


@dataclass(frozen=True)
class SpecProblem:
    """A problem with a spec that only its family knows; the spec's loader locates it."""

    loc: Loc
    problem: str
    fix: str


@dataclass(frozen=True)
class Variant:
    """One entry of a family's catalogue: a name users write in `optimize.variants`, the runtime
    the server runs it with, how it is made, and the file it is stored as."""

    name: str
    runtime: str  # the serving runtime that runs it: "litert" | "onnx" | a new family's own
    technique: str  # "ptq" | "pruned" | "clustered" | "qat" | "onnx" | ...
    quantization: str  # none | dynamic | float16 | int8 | static | q4_k_m | ...
    description: str
    artifact_file: str = "model.bin"
    uses_fine_tuning_data: bool = False  # its key includes optimize.fine_tuning_data's bytes


@dataclass(frozen=True)
class Candidate:
    """A variant a request tries; an ineligible one is measured and listed, never chosen."""

    variant: Variant
    eligible: bool
    reason: str = ""


@dataclass(frozen=True)
class ServingNeeds:
    """What one replica needs to serve the chosen variant, as its family computes it from the prep report,
    the artifact and the spec's serving settings (e.g. a language model's weights and KV cache)."""

    memory_bytes: int  # the least memory limit the replica serves with
    memory_detail: str  # how the figure is made up, for the spec error and the logs
    drain_s: float  # how long in-flight requests may take to finish after SIGTERM (e.g. streams)


@dataclass(frozen=True)
class Quality:
    """A quality metric and how the gate reads it. The gate's allowance (`optimize.max_accuracy_drop`)
    is in the metric's own units: a loss of accuracy, or a rise of a lower-is-better metric such as
    mae, KL divergence or word error rate."""

    name: str
    lower_is_better: bool = False
    percent: bool = True  # a fraction shown as points (accuracy); else shown as a number (mae)

    def loss(self, baseline: float, value: float) -> float:
        """How much worse `value` is than `baseline` (positive = worse), in the metric's units."""
        return value - baseline if self.lower_is_better else baseline - value

    def limit(self, baseline: float, allowed: float) -> float:
        """The worst value the gate passes."""
        return baseline + allowed if self.lower_is_better else baseline - allowed

    def amount(self, value: float) -> str:
        return f"{value * 100:.2f} points" if self.percent else f"{value:.4f}"

    def loss_text(self, loss: float, baseline: float, value: float, label: str | None = None) -> str:
        what = label or self.name
        if self.lower_is_better:
            return f"raises {what} by {self.amount(loss)} ({baseline:.4f} → {value:.4f})"
        return f"loses {self.amount(loss)} of {what} ({baseline:.4f} → {value:.4f})"


@dataclass(frozen=True)
class Measured:
    """A variant's row of the report and the outputs it gave for the evaluation inputs."""

    measure: Measure
    outputs: np.ndarray


@dataclass(frozen=True)
class Baselines:
    """The float model as given: its rows (the first is the gate's reference) and, when the family's
    metric compares with it (e.g. cosine to the float embeddings), its evaluation outputs."""

    measures: list[Measure]
    outputs: np.ndarray | None = None


class Session(Protocol):
    """One prep run of one model. Loads the model and the data lazily: a run whose every variant is
    cached loads nothing."""

    def evaluation_samples(self) -> int:
        """How many evaluation samples the metric is computed on (for the report)."""
        ...

    def baselines(self) -> Baselines:
        """Measure the float model as given (the gate's reference)."""
        ...

    def build(self, variants: Sequence[Variant]) -> Iterator[tuple[Variant, bytes, Notes]]:
        """Make each variant's artifact bytes, yielding each as it is made (a family may make
        several in one go, e.g. one fine-tuning run for two quantizations)."""
        ...

    def measure(self, variant: Variant, artifact: bytes, notes: Notes, reference: np.ndarray | None) -> Measured:
        """Score and time the artifact with the runtime the server runs it with; `reference` is
        the baselines' outputs when the family stored them."""
        ...


class Family(Protocol):
    """One kind of model. Attributes are plain data; the methods are the only code the loop calls."""

    name: str  # the registry key, e.g. "keras"
    formats: tuple[str, ...]  # the spec's model.format values it loads
    tasks: tuple[str, ...]  # the spec's model.task values it serves
    catalogue: Mapping[str, Variant]  # every variant it can make, by name, in the order tried
    honours: frozenset[str]  # the optimize fields it reads; another field set in the spec is refused
    metrics: Mapping[str, Quality]  # its quality metrics; the spec's optimize.metric picks one
    baseline: str  # the name of what it measures the float model with, for the baseline's key
    reference: str | None  # a variant always measured and listed among the baselines (size/speed reference)
    gentle: tuple[str, ...]  # the variants to suggest when none passes the gate
    # The optimize field that holds the gate's allowance (copied into optimize.max_accuracy_drop by
    # the family's request when it is another, e.g. optimize.max_kl): where a miss is reported.
    gate_field: str
    # The serving image's pinned packages (a requirements file in serving/) for each runtime its
    # variants run on (`Variant.runtime`): render installs the chosen variant's.
    requirements: Mapping[str, str]

    def spec_problems(self, spec: ModelSpec, folder: Path, written: Written) -> list[SpecProblem]:
        """What only this family decides about a validated spec (the data files it reads, the task and
        metrics it needs, the files beside the model); `folder` holds the spec file."""
        ...

    def request(self, spec: ResolvedSpec, all_variants: bool = False) -> PrepRequest:
        """The prep request for a resolved spec of this family."""
        ...

    def candidates(self, req: PrepRequest) -> list[Candidate]:
        """What to try, in catalogue order; a UserError at the spec's line for what it cannot make."""
        ...

    def variant_settings(self, req: PrepRequest, variant: Variant) -> dict[str, Any]:
        """What makes `variant` beyond the model's bytes (JSON): part of its content key."""
        ...

    def judge(self, req: PrepRequest, measure: Measure) -> str | None:
        """Why a measured variant may not be chosen beyond the gate (e.g. a text model's lowest
        cosine under optimize.min_cosine), or None. Read after the cache, so changing such a
        setting re-measures nothing."""
        ...

    def input_ranges(self, req: PrepRequest) -> dict[str, tuple[int, int]]:
        """The values each integer input may carry, read from the model (e.g. an embedding's
        vocabulary); kept in the report's signature, checked by the server per request."""
        ...

    def session(self, req: PrepRequest, cache: Cache, progress: Progress, step: Step) -> Session:
        """A run over `req` (loads nothing yet); `cache` is for the family's own shared steps,
        e.g. one export that several variants start from."""
        ...
