"""The prep stage's output: every measured variant, the gate, the choice and the chosen artifact, typed.

`PrepReport` is the one source for what later stages show: the Pulumi outputs, serving.json's
metadata (and so the server's /metadata), the CLI table, the chart and `modelstack diff`. It is
plain data: `model_dump(mode="json")` goes through Pulumi state, where every number becomes a
float, and `PrepReport.model_validate` gives back the same report, ints as ints.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from iac.spec.models import Metric, Objective


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Notes(_Data):
    """What a technique or a conversion says about the variant it made."""

    int8_fallback: str | None = None  # ops that run in float32 in an int8 model
    float_ops: list[str] | None = None
    sparsity: float | None = None  # pruning: the share of zero weights after stripping
    begin_step: int | None = None
    end_step: int | None = None
    frequency: int | None = None
    steps: int | None = None
    unique_weights_per_kernel: int | None = None  # clustering
    cosine_min: float | None = None  # metric cosine: the lowest cosine to the float model over the evaluation texts
    fused_ops: dict[str, int] | None = None  # text models: operators ONNX Runtime's BERT optimizer fused
    resident_bytes: int | None = None  # speech: resident memory of a process that loaded the variant
    real_time_factor: float | None = None  # speech: compute seconds per second of evaluation audio
    beam_size: int | None = None  # speech: 1 = greedy
    # Text generation (the llm family): quality against the source model and speed as served.
    kl_p99: float | None = None  # 99th percentile of the per-token KL divergence
    top1_agreement: float | None = None  # share of positions whose most likely next token is the source's
    perplexity: float | None = None  # on the evaluation text's real next tokens
    scored_tokens: int | None = None
    prompt_tokens_per_s: float | None = None
    generation_tokens_per_s: float | None = None
    peak_rss_bytes: int | None = None  # the timing process's peak resident memory at context_length
    context_length: int | None = None
    tensor_types: dict[str, int] | None = None  # ggml tensor types in the file, e.g. {"Q4_K": 120}


class Measure(_Data):
    """One measured row: a baseline (Keras, the float32 LiteRT reference) or a candidate variant."""

    name: str
    runtime: str  # keras | litert | onnx
    technique: str  # baseline | ptq | pruned | clustered | qat | onnx
    quantization: str
    description: str | None = None
    artifact_file: str | None = None
    sha256: str | None = None
    size_bytes: int
    gzip_bytes: int
    metric: Metric
    accuracy: float  # the metric's value on the evaluation data
    outputs_sha256: str | None = None  # sha256 of the float32 evaluation outputs the runtime gave
    latency_p50_us: float
    latency_p99_us: float
    throughput_per_s: float
    latency_calls: int
    threads: int
    notes: Notes = Notes()
    baseline: bool = False
    eligible: bool = True  # may be chosen; otherwise measured and listed only
    not_eligible_because: str | None = None
    accuracy_drop: float | None = None  # set by the gate: loss against the Keras baseline
    passed_gate: bool | None = None
    balanced_score: float | None = None  # set when the objective is balanced
    chosen: bool = False


class TensorSignature(_Data):
    """One tensor of the served signature: its name, the shape of one sample (no batch dimension;
    [] for a text, one string per sample) and its dtype."""

    name: str
    shape: list[int]
    dtype: str = "float32"
    range: list[int] | None = None  # an integer input's lowest and highest accepted value (from the model)

    def text(self) -> str:
        return f"{self.name}{self.shape}:{self.dtype}"


def signature_text(tensors: list[TensorSignature]) -> str:
    """ "a[1]:int64, b[1]:int64", sorted by name (as TF Serving's signature maps are)."""
    return ", ".join(t.text() for t in sorted(tensors, key=lambda t: t.name))


class ServedModel(_Data):
    """What the server says about its model under /metadata's `modelstack` (serving.json's `metadata`)."""

    variant: str
    quantization: str
    artifact_sha256: str
    model_sha256: str
    size_bytes: int
    accuracy: float
    # The served signature (None from a server built before it was kept here).
    inputs: list[TensorSignature] | None = None
    outputs: list[TensorSignature] | None = None


class PrepReport(_Data):
    """A passing prep: the top-level fields after `choice` describe the chosen variant."""

    key: str
    metric: Metric
    top_k: int | None = None  # set for metric top_k
    objective: Objective
    max_accuracy_drop: float
    baseline_accuracy: float
    model_sha256: str
    threads: int
    inputs: list[TensorSignature]  # every input of the served signature, in the model's order
    outputs: list[TensorSignature]  # every output, as the server names them
    lower_is_better: bool = False  # the metric's direction (mae, KL divergence, word error rate: lower)
    evaluation_samples: int
    baselines: list[Measure]
    variants: list[Measure]
    choice: str  # why the chosen variant won
    variant: str
    runtime: str
    quantization: str
    artifact_file: str
    artifact_sha256: str
    size_bytes: int
    gzip_bytes: int
    accuracy: float
    accuracy_drop: float
    latency_p50_us: float
    latency_p99_us: float
    throughput_per_s: float

    @model_validator(mode="after")
    def _one_chosen(self) -> PrepReport:
        chosen = [v.name for v in self.variants if v.chosen]
        if chosen != [self.variant]:
            raise ValueError(f"exactly the chosen variant {self.variant!r} must be marked chosen, not {chosen}")
        return self

    @property
    def input(self) -> TensorSignature:
        """The first input (the only one of most models)."""
        return self.inputs[0]

    @property
    def chosen(self) -> Measure:
        return next(v for v in self.variants if v.chosen)

    @property
    def reference(self) -> Measure | None:
        """The float32 LiteRT baseline every size and speed is compared with."""
        return next((b for b in self.baselines if b.name == "litert-float32"), None)

    def served(self) -> ServedModel:
        return ServedModel(
            variant=self.variant,
            quantization=self.quantization,
            artifact_sha256=self.artifact_sha256,
            model_sha256=self.model_sha256,
            size_bytes=self.size_bytes,
            accuracy=self.accuracy,
            inputs=self.inputs,
            outputs=self.outputs,
        )

    @classmethod
    def of(
        cls,
        *,
        key: str,
        metric: Metric,
        top_k: int,
        objective: Objective,
        max_accuracy_drop: float,
        baseline_accuracy: float,
        model_sha256: str,
        threads: int,
        inputs: list[TensorSignature],
        outputs: list[TensorSignature],
        evaluation_samples: int,
        baselines: list[Measure],
        variants: list[Measure],
        choice: str,
        lower_is_better: bool = False,
    ) -> PrepReport:
        """The report with its top-level fields taken from the one variant marked chosen."""
        c = next(v for v in variants if v.chosen)
        assert c.artifact_file is not None and c.sha256 is not None and c.accuracy_drop is not None
        return cls(
            key=key,
            metric=metric,
            top_k=top_k if metric == Metric.top_k else None,
            objective=objective,
            max_accuracy_drop=max_accuracy_drop,
            baseline_accuracy=baseline_accuracy,
            model_sha256=model_sha256,
            threads=threads,
            inputs=inputs,
            outputs=outputs,
            lower_is_better=lower_is_better,
            evaluation_samples=evaluation_samples,
            baselines=baselines,
            variants=variants,
            choice=choice,
            variant=c.name,
            runtime=c.runtime,
            quantization=c.quantization,
            artifact_file=c.artifact_file,
            artifact_sha256=c.sha256,
            size_bytes=c.size_bytes,
            gzip_bytes=c.gzip_bytes,
            accuracy=c.accuracy,
            accuracy_drop=c.accuracy_drop,
            latency_p50_us=c.latency_p50_us,
            latency_p99_us=c.latency_p99_us,
            throughput_per_s=c.throughput_per_s,
        )
