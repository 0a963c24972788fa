"""The model spec: what the user wrote in model.yaml (`ModelSpec`) and the resolved form.

`ModelSpec` is frozen and forbids unknown fields; `ResolvedSpec` adds what the builders need
(absolute paths, derived names) without ever mutating what the user wrote.
"""

from __future__ import annotations

import re
from enum import StrEnum
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = r"^[a-z][a-z0-9-]{0,39}$"
MEMORY_RE = re.compile(r"^([1-9][0-9]*)(Ki|Mi|Gi)$")
MEMORY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
DEFAULT_BASE_IMAGE = "modelstack-base:bookworm-py311"
MODEL_SUFFIXES = (".keras", ".h5")


class Quantization(StrEnum):
    none = "none"
    dynamic = "dynamic"
    float16 = "float16"
    int8 = "int8"


class DType(StrEnum):
    float32 = "float32"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class TensorSpec(_Strict):
    """One model input: its name, the shape of one sample (no batch dimension), its dtype."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
    shape: Annotated[list[Annotated[int, Field(ge=1, le=1_000_000)]], Field(min_length=1, max_length=6)]
    dtype: DType = DType.float32


class ModelSource(_Strict):
    path: Annotated[str, Field(min_length=1, description="A .keras or .h5 file, or a SavedModel directory, relative to model.yaml")]
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$", description="Pin the model file's bytes")] = None
    inputs: Annotated[list[TensorSpec], Field(min_length=1, max_length=1)]

    @field_validator("path")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if not value.endswith(MODEL_SUFFIXES) and Path(value).suffix:
            raise ValueError(
                f"{value!r} is not a Keras model; point it at a .keras or .h5 file or a SavedModel directory"
            )
        return value


class DataFiles(_Strict):
    calibration: Annotated[str, Field(description=".npz with an array 'x' of representative inputs")]
    evaluation: Annotated[str, Field(description=".npz with arrays 'x' (inputs) and 'y' (labels)")]

    @field_validator("calibration", "evaluation")
    @classmethod
    def _npz(cls, value: str) -> str:
        if not value.endswith(".npz"):
            raise ValueError(f"{value!r} is not an .npz file; save the arrays with numpy.savez as a .npz file")
        return value


class Objective(StrEnum):
    smallest = "smallest"
    fastest = "fastest"
    balanced = "balanced"


class Metric(StrEnum):
    accuracy = "accuracy"
    top_k = "top_k"
    mae = "mae"


class VariantName(StrEnum):
    litert_float32 = "litert-float32"
    litert_dynamic = "litert-dynamic"
    litert_float16 = "litert-float16"
    litert_int8 = "litert-int8"
    litert_int8_io = "litert-int8-io"
    pruned_float32 = "pruned-float32"
    pruned_int8 = "pruned-int8"
    clustered_float32 = "clustered-float32"
    clustered_int8 = "clustered-int8"
    qat_int8 = "qat-int8"
    onnx_float32 = "onnx-float32"
    onnx_dynamic = "onnx-dynamic"
    onnx_static = "onnx-static"


class PruningSchedule(StrEnum):
    polynomial = "polynomial"
    constant = "constant"


class Pruning(_Strict):
    """Magnitude pruning (tensorflow-model-optimization), fine-tuned, stripped before export."""

    target_sparsity: Annotated[float, Field(ge=0.05, le=0.99, description="Fraction of weights set to zero")] = 0.8
    schedule: PruningSchedule = PruningSchedule.polynomial
    begin_step: Annotated[int, Field(ge=0, description="Fine-tuning step where pruning starts")] = 0
    end_step: Annotated[int | None, Field(ge=1, description="Step where the target is reached (default: 70% of fine-tuning)")] = None
    frequency: Annotated[int, Field(ge=1, le=10_000, description="Prune every this many steps")] = 10
    epochs: Annotated[int, Field(ge=1, le=200, description="Fine-tuning epochs")] = 2


class Clustering(_Strict):
    """Weight clustering: each layer's weights share this many values."""

    clusters: Annotated[int, Field(ge=2, le=256)] = 16
    epochs: Annotated[int, Field(ge=0, le=200, description="Fine-tuning epochs")] = 1


class QuantizationAwareTraining(_Strict):
    epochs: Annotated[int, Field(ge=1, le=200, description="Fine-tuning epochs with fake quantization")] = 1


class Optimize(_Strict):
    """What modelprep tries, how it judges, and how it chooses. With no `variants` and no
    `quantization`, it tries the post-training LiteRT variants (plus pruning/clustering/QAT when
    configured here) and measures the ONNX variants for comparison."""

    objective: Annotated[Objective, Field(description="smallest bytes, fastest p50, or balanced")] = Objective.smallest
    metric: Annotated[Metric, Field(description="accuracy, top_k (with top_k), or mae (regression)")] = Metric.accuracy
    top_k: Annotated[int, Field(ge=1, le=1000, description="k for metric top_k")] = 5
    max_accuracy_drop: Annotated[
        float, Field(ge=0.0, le=1.0, description="Largest accepted loss of the metric, absolute (0.01 = 1 percentage point; for mae, the largest accepted increase)")
    ] = 0.01
    quantization: Annotated[
        Quantization | None, Field(description="Shorthand for variants: [litert-<quantization>] (none = litert-float32)")
    ] = None
    variants: Annotated[
        list[VariantName] | None,
        Field(min_length=1, description="Restrict the candidates to these; the only way to allow onnx-* variants to be chosen"),
    ] = None
    int8_io: Annotated[bool, Field(description="Also try litert-int8-io (int8 inputs and outputs)")] = False
    pruning: Pruning | None = None
    clustering: Clustering | None = None
    qat: QuantizationAwareTraining | None = None
    fine_tuning_data: Annotated[
        str | None,
        Field(description=".npz with 'x' (and 'y') for pruning/clustering/QAT fine-tuning, relative to model.yaml; "
                          "default: data.calibration's inputs, distilled from the float model"),
    ] = None

    @field_validator("variants")
    @classmethod
    def _unique(cls, value: list[VariantName] | None) -> list[VariantName] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("lists a variant twice; name each variant once")
        return value

    @field_validator("fine_tuning_data")
    @classmethod
    def _npz(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".npz"):
            raise ValueError(f"{value!r} is not an .npz file; save the arrays with numpy.savez as a .npz file")
        return value

    @model_validator(mode="after")
    def _one_way_to_pick(self) -> Optimize:
        if self.quantization is not None and self.variants is not None:
            raise ValueError(
                "quantization and variants are both set; keep variants (e.g. [litert-" + self.quantization.value.replace("none", "float32") + "]) and remove quantization"
            )
        return self


class Serving(_Strict):
    port: Annotated[int, Field(ge=1024, le=65535, description="Port the server listens on inside the container")] = 8501
    threads: Annotated[int, Field(ge=1, le=64, description="Runtime threads per inference (LiteRT interpreter / ONNX Runtime intra-op)")] = 1
    max_batch_size: Annotated[int, Field(
        ge=0, le=1024,
        description="Dynamic batching: most samples run in one inference; 0 or 1 turns batching off",
    )] = 1
    max_latency_ms: Annotated[float, Field(
        ge=0.0, le=1000.0,
        description="Dynamic batching: longest a request waits for others to join its batch; "
                    "0 = no waiting, a batch holds what queued during the previous one",
    )] = 0.0
    max_body_bytes: Annotated[int, Field(
        ge=1024, le=256 * 1024**2, description="Largest request body accepted; bigger ones get 413",
    )] = 4 * 1024**2
    api_key_env: Annotated[str | None, Field(
        description="Require an API key (Authorization: Bearer or X-API-Key) on every route but the "
                    "health checks; the key is read from this environment variable when the "
                    "container starts, never stored in the image (e.g. MODELSTACK_API_KEY)",
    )] = None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,127}", value):
            raise ValueError(
                f"{value!r} is not an environment variable name; use upper-case letters, digits "
                "and '_', e.g. MODELSTACK_API_KEY"
            )
        return value


class Deploy(_Strict):
    target: Literal["docker"] = "docker"
    replicas: Annotated[int, Field(ge=1, le=16, description="Model containers behind the proxy")] = 1
    cpus: Annotated[float, Field(gt=0.0, le=64.0)] = 1.0
    memory: Annotated[str, Field(description="Memory limit, e.g. 512Mi or 2Gi")] = "512Mi"
    base_image: Annotated[str, Field(min_length=1)] = DEFAULT_BASE_IMAGE
    bind_address: IPv4Address = IPv4Address("127.0.0.1")
    host_port: Annotated[int, Field(ge=1024, le=65535, description="The proxy's port on the host: the one users call")] = 8501
    ready_timeout: Annotated[float, Field(gt=0, le=600, description="Seconds a new version has to become ready before the rollout is abandoned")] = 60.0

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        match = MEMORY_RE.match(value)
        if not match or memory_bytes(value) < 16 * 1024**2:
            raise ValueError(f"{value!r} is not a memory size of at least 16Mi; write it like 512Mi or 2Gi")
        return value

    @field_validator("base_image")
    @classmethod
    def _own_name(cls, value: str) -> str:
        if not value.startswith("modelstack-"):
            raise ValueError(
                f"{value!r} is not a locally built image (no registry is reachable); "
                f"use {DEFAULT_BASE_IMAGE} or another image named modelstack-*"
            )
        return value


class ModelSpec(_Strict):
    """What a user writes in model.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="modelstack model spec")

    name: Annotated[str, Field(pattern=NAME_RE, description="Service name: lower case letters, digits, dashes")]
    model: ModelSource
    data: DataFiles
    optimize: Optimize = Optimize()
    serving: Serving = Serving()
    deploy: Deploy = Deploy()


def memory_bytes(value: str) -> int:
    match = MEMORY_RE.match(value)
    if not match:
        raise ValueError(value)
    return int(match.group(1)) * MEMORY_UNITS[match.group(2)]


class ResolvedSpec(BaseModel):
    """The spec with every default filled in and every path absolute. Plain data: it is
    passed to Pulumi providers as JSON and must round-trip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_file: str
    spec: ModelSpec
    model_path: str
    calibration_path: str
    evaluation_path: str

    @property
    def name(self) -> str:
        return self.spec.name
