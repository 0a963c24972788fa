"""The model spec: what the user wrote in model.yaml (`ModelSpec`) and the resolved form.

`ModelSpec` is frozen and forbids unknown fields; `ResolvedSpec` adds what the builders need
(absolute paths, derived names) without ever mutating what the user wrote.
"""

from __future__ import annotations

import re
from enum import StrEnum
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

import serving.config as sc
from serving.config import Setting as ServerSetting

NAME_RE = r"^[a-z][a-z0-9-]{0,39}$"
MEMORY_RE = re.compile(r"^([1-9][0-9]*)(Ki|Mi|Gi)$")
MEMORY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
DEFAULT_BASE_IMAGE = "modelstack-base:bookworm-py311"
MODEL_SUFFIXES = (".keras", ".h5")
GGUF_SUFFIX = ".gguf"
TEXT_DATA_SUFFIXES = (".txt", ".jsonl")


class Quantization(StrEnum):
    none = "none"
    dynamic = "dynamic"
    float16 = "float16"
    int8 = "int8"


class DType(StrEnum):
    float32 = "float32"
    int32 = "int32"
    int64 = "int64"
    string = "string"  # text: one string per sample, tokenized by the server


class ModelFormat(StrEnum):
    """How the model's files are written; it selects the model family prep runs (modelprep.families)."""

    keras = "keras"  # a .keras / .h5 file or a SavedModel directory
    huggingface = "huggingface"  # a folder with config.json, tokenizer.json, model.safetensors
    gguf = "gguf"  # one .gguf file (llama.cpp)
    ctranslate2 = "ctranslate2"  # a CTranslate2 folder (model.bin, config.json)


class Task(StrEnum):
    """What the served model does with a request."""

    predict = "predict"  # tensors in, tensors out: the default of a keras model
    sentence_embedding = "sentence-embedding"
    text_classification = "text-classification"
    text_generation = "text-generation"
    speech_recognition = "speech-recognition"


# The tasks each format serves; the first is its default when model.task is not written.
FORMAT_TASKS: dict[ModelFormat, tuple[Task, ...]] = {
    ModelFormat.keras: (Task.predict,),
    ModelFormat.huggingface: (Task.sentence_embedding, Task.text_classification),
    ModelFormat.gguf: (Task.text_generation,),
    ModelFormat.ctranslate2: (Task.speech_recognition,),
}
HF_TASKS = FORMAT_TASKS[ModelFormat.huggingface]


class Truncation(StrEnum):
    truncate = "truncate"
    refuse = "refuse"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class TokenizerSettings(_Strict):
    """How the server turns a string into token ids (the tokenizer itself comes with the model)."""

    max_length: Annotated[int, Field(ge=2, le=8192, description="Most tokens per text, special tokens included")] = 256
    truncation: Annotated[
        Truncation,
        Field(
            description="A longer text is cut to max_length (truncate) or answered with 413 (refuse)",
        ),
    ] = Truncation.truncate


class TensorSpec(_Strict):
    """One model input: its name, the shape of one sample (no batch dimension), its dtype.
    A `string` input is one text per sample: it has no shape, and the tokenizer settings apply."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
    shape: Annotated[list[Annotated[int, Field(ge=1, le=1_000_000)]] | None, Field(min_length=1, max_length=6)] = None
    dtype: DType = DType.float32
    tokenizer: TokenizerSettings | None = None

    @model_validator(mode="after")
    def _shape_for_kind(self) -> TensorSpec:
        if self.dtype == DType.string:
            if self.shape is not None:
                raise ValueError("a string input holds one text per sample and takes no shape; remove shape")
        else:
            if self.shape is None:
                raise ValueError(f"a {self.dtype.value} input needs the shape of one sample; add shape, e.g. [64]")
            if self.tokenizer is not None:
                raise ValueError(
                    f"tokenizer settings apply to string inputs, not {self.dtype.value}; remove tokenizer or set dtype: string"
                )
        return self

    @property
    def text(self) -> bool:
        return self.dtype == DType.string

    @property
    def tokenizing(self) -> TokenizerSettings:
        return self.tokenizer or TokenizerSettings()


TEXT_INPUT = TensorSpec(name="text", dtype=DType.string)


class ModelSource(_Strict):
    path: Annotated[
        str,
        Field(
            min_length=1,
            description="A .keras or .h5 file, a SavedModel directory, a Hugging Face "
            "model directory (config.json, tokenizer.json, model.safetensors), a .gguf file "
            "or a CTranslate2 folder (model.bin), relative to model.yaml",
        ),
    ]
    format: Annotated[
        ModelFormat | None,
        Field(
            description="keras, huggingface, gguf or ctranslate2; default: gguf for a .gguf file, ctranslate2 for a directory "
            "holding model.bin, huggingface for a directory holding config.json, else keras",
        ),
    ] = None
    task: Annotated[
        Task | None,
        Field(
            description="What the model does: predict (keras, the default), sentence-embedding (mean-pooled, L2-normalised) or "
            "text-classification (huggingface), text-generation (gguf), speech-recognition (ctranslate2)",
        ),
    ] = None
    labels: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128)]] | None,
        Field(
            min_length=2,
            max_length=10_000,
            description="text-classification: the class names in output order (default: the config's id2label)",
        ),
    ] = None
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$", description="Pin the model file's bytes")] = None
    inputs: Annotated[
        list[TensorSpec] | None,
        Field(
            min_length=1,
            max_length=16,
            description="The input signature, each input named; default for a Hugging Face model: one string input 'text'",
        ),
    ] = None

    @field_validator("path")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if not value.endswith((*MODEL_SUFFIXES, GGUF_SUFFIX)) and Path(value).suffix:
            raise ValueError(
                f"{value!r} is not a model prep knows; point it at a .keras or .h5 file, a SavedModel directory, "
                "a Hugging Face model directory, a .gguf file or a CTranslate2 folder"
            )
        return value

    @field_validator("inputs")
    @classmethod
    def _unique_names(cls, value: list[TensorSpec] | None) -> list[TensorSpec] | None:
        if value is not None and len({t.name for t in value}) != len(value):
            raise ValueError("names an input twice; give each input its own name")
        return value

    @model_validator(mode="after")
    def _family(self) -> ModelSource:
        written = (
            self.format
            or (ModelFormat.gguf if self.path.endswith(GGUF_SUFFIX) else None)
            or next(
                (
                    f
                    for f, tasks in FORMAT_TASKS.items()
                    if self.task in tasks and f not in (ModelFormat.keras, ModelFormat.huggingface)
                ),
                None,
            )
        )
        if written is not None and written not in (ModelFormat.keras, ModelFormat.huggingface):
            tasks = FORMAT_TASKS[written]
            if self.task is not None and self.task not in tasks:
                raise ValueError(
                    f"a {written.value} model does not do {self.task.value}; "
                    f"use task: {' or task: '.join(t.value for t in tasks)}, or remove task"
                )
            return self
        hf = self.format == ModelFormat.huggingface or (self.format is None and self.task in HF_TASKS)
        if hf and self.path.endswith(MODEL_SUFFIXES):
            raise ValueError(
                f"{self.path!r} is a Keras file, not a Hugging Face model directory; "
                "remove task (and format) for a Keras model, or point path at a Hugging Face model directory"
            )
        if hf:
            if self.task is None:
                raise ValueError(
                    "a huggingface model needs a task; add task: sentence-embedding or task: text-classification"
                )
            texts = [t for t in self.inputs or [] if t.text]
            if self.inputs is not None and (len(self.inputs) != 1 or not texts):
                raise ValueError(
                    "a huggingface model takes one string input; list one input with dtype: string, or leave inputs out"
                )
        else:
            if self.task not in (None, Task.predict):
                raise ValueError(
                    f"a keras model does predict, not {self.task.value}; remove task, "
                    "or set the format that does it (huggingface, gguf, ctranslate2)"
                )
            if self.inputs is None and self.format == ModelFormat.keras:
                raise ValueError("a keras model needs its input signature; add inputs with name, shape and dtype")
            if any(t.text for t in self.inputs or []):
                raise ValueError(
                    "string inputs need a tokenizer, which comes with a huggingface model; use format: huggingface"
                )
        if self.labels is not None:
            if self.task != Task.text_classification:
                raise ValueError("labels apply to task: text-classification; remove labels")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("names a label twice; give each class its own name")
        return self

    def resolved_format(self, directory_has_config: bool, directory_has_model_bin: bool = False) -> ModelFormat:
        """The format as written, else inferred from the path: a .gguf file is gguf, a directory with
        model.bin is CTranslate2, one with config.json (or a Hugging Face task) is Hugging Face."""
        if self.format is not None:
            return self.format
        if self.path.endswith(GGUF_SUFFIX):
            return ModelFormat.gguf
        if directory_has_model_bin:
            return ModelFormat.ctranslate2
        if self.task is not None and self.task != Task.predict:
            return next(f for f, tasks in FORMAT_TASKS.items() if self.task in tasks)
        return ModelFormat.huggingface if directory_has_config else ModelFormat.keras

    def resolved_task(self, model_format: ModelFormat) -> Task:
        """The task as written, else the format's default (a keras model predicts)."""
        return self.task or FORMAT_TASKS[model_format][0]

    @property
    def signature(self) -> list[TensorSpec]:
        """The inputs as written, or the one text input of a Hugging Face model."""
        return list(self.inputs) if self.inputs is not None else [TEXT_INPUT]


class DataFiles(_Strict):
    calibration: Annotated[
        str,
        Field(
            description=".npz with an array 'x' of representative inputs "
            "(text models: .txt, one text per line, or .jsonl)"
        ),
    ]
    evaluation: Annotated[
        str,
        Field(
            description=".npz with arrays 'x' (inputs) and 'y' (labels); text models: .txt "
            '(one text per line) or .jsonl ({"text": ..., "label": ...} per line)'
        ),
    ]

    @field_validator("calibration", "evaluation")
    @classmethod
    def _npz(cls, value: str) -> str:
        if not value.endswith((".npz", *TEXT_DATA_SUFFIXES)):
            raise ValueError(
                f"{value!r} is not an .npz, .txt or .jsonl file; save arrays with numpy.savez as a .npz file, "
                "or texts one per line in a .txt or .jsonl file"
            )
        return value


# --- Text generation (model.format gguf, task text-generation): the llm family's own fields. ---
# Mixed into Optimize so they sit beside the fields every family shares; the llm family honours
# them and the others refuse them when set (modelprep.family `honours`).


class GenerationGate(BaseModel):
    """The gate on a re-quantized language model: how far its next-token distributions may move
    from the source model's over the evaluation text (data.evaluation)."""

    max_kl: Annotated[
        float | None,
        Field(
            ge=0.0,
            le=1.0,
            description="Text generation: largest accepted mean KL divergence (nats per token) of a variant's "
            "next-token distributions from the source model's (llama.cpp Q8_0 is typically ~0.01, "
            "Q4_0 0.1-0.3); default 0.1",
        ),
    ] = None
    min_agreement: Annotated[
        float | None,
        Field(
            ge=0.0,
            le=1.0,
            description="Text generation: least accepted top-1 agreement with the source model (0.9 = the same most "
            "likely next token at 90% of the positions); default: not gated",
        ),
    ] = None
    evaluation_tokens: Annotated[
        int | None,
        Field(
            ge=64,
            le=1_000_000,
            description="Text generation: held-out tokens of data.evaluation to compare on (fewer if the text is "
            "shorter); default 20000",
        ),
    ] = None


# Unset fields stay None, so the other families' prep keys do not change; these are the defaults.
# (The context length, serving.context_length, is a server setting: serving/config.py.)
DEFAULT_MAX_KL = 0.1
DEFAULT_EVALUATION_TOKENS = 20_000


class Objective(StrEnum):
    smallest = "smallest"
    fastest = "fastest"
    balanced = "balanced"


class Metric(StrEnum):
    accuracy = "accuracy"
    top_k = "top_k"
    mae = "mae"
    cosine = "cosine"  # embeddings: mean cosine similarity to the float model's outputs
    wer = "wer"  # speech recognition: word error rate on the evaluation clips (lower is better)
    kl = "kl"  # text generation: mean KL divergence of next-token distributions from the source model


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
    onnx_float16 = "onnx-float16"
    # Speech (a Whisper model in CTranslate2's format): the compute type CTranslate2 runs, greedy or beam 5.
    ct2_float32 = "ct2-float32"
    ct2_float32_beam5 = "ct2-float32-beam5"
    ct2_int8 = "ct2-int8"
    ct2_int8_beam5 = "ct2-int8-beam5"
    ct2_int8_float32 = "ct2-int8_float32"
    ct2_int8_float32_beam5 = "ct2-int8_float32-beam5"
    # Text generation (model.format gguf): the source file, and llama.cpp re-quantizations of it.
    gguf_source = "gguf-source"
    gguf_q8_0 = "gguf-q8_0"
    gguf_q6_k = "gguf-q6_k"
    gguf_q5_k_m = "gguf-q5_k_m"
    gguf_q4_k_m = "gguf-q4_k_m"
    gguf_q4_0 = "gguf-q4_0"


class PruningSchedule(StrEnum):
    polynomial = "polynomial"
    constant = "constant"


class Pruning(_Strict):
    """Magnitude pruning (tensorflow-model-optimization), fine-tuned, stripped before export."""

    target_sparsity: Annotated[float, Field(ge=0.05, le=0.99, description="Fraction of weights set to zero")] = 0.8
    schedule: PruningSchedule = PruningSchedule.polynomial
    begin_step: Annotated[int, Field(ge=0, description="Fine-tuning step where pruning starts")] = 0
    end_step: Annotated[
        int | None, Field(ge=1, description="Step where the target is reached (default: 70% of fine-tuning)")
    ] = None
    frequency: Annotated[int, Field(ge=1, le=10_000, description="Prune every this many steps")] = 10
    epochs: Annotated[int, Field(ge=1, le=200, description="Fine-tuning epochs")] = 2


class Clustering(_Strict):
    """Weight clustering: each layer's weights share this many values."""

    clusters: Annotated[int, Field(ge=2, le=256)] = 16
    epochs: Annotated[int, Field(ge=0, le=200, description="Fine-tuning epochs")] = 1


class QuantizationAwareTraining(_Strict):
    epochs: Annotated[int, Field(ge=1, le=200, description="Fine-tuning epochs with fake quantization")] = 1


class Optimize(GenerationGate, _Strict):
    """What modelprep tries, how it judges, and how it chooses. With no `variants` and no
    `quantization`, it tries the post-training LiteRT variants (plus pruning/clustering/QAT when
    configured here) and measures the ONNX variants for comparison."""

    objective: Annotated[Objective, Field(description="smallest bytes, fastest p50, or balanced")] = Objective.smallest
    metric: Annotated[
        Metric,
        Field(
            description="accuracy, top_k (with top_k), mae (regression), cosine (embeddings) "
            "or wer (speech: word error rate; max_accuracy_drop is its largest accepted increase)"
        ),
    ] = Metric.accuracy
    top_k: Annotated[int, Field(ge=1, le=1000, description="k for metric top_k")] = 5
    max_accuracy_drop: Annotated[
        float,
        Field(
            ge=0.0,
            le=1.0,
            description="Largest accepted loss of the metric, absolute (0.01 = 1 percentage point; for mae, the largest accepted increase)",
        ),
    ] = 0.01
    quantization: Annotated[
        Quantization | None,
        Field(description="Shorthand for variants: [litert-<quantization>] (none = litert-float32)"),
    ] = None
    variants: Annotated[
        list[VariantName] | None,
        Field(
            min_length=1,
            description="Restrict the candidates to these; the only way to allow onnx-* variants to be chosen",
        ),
    ] = None
    int8_io: Annotated[bool, Field(description="Also try litert-int8-io (int8 inputs and outputs)")] = False
    min_cosine: Annotated[
        float | None,
        Field(
            ge=0.0,
            le=1.0,
            description="metric cosine: every evaluation text's embedding must reach this cosine to the float model's",
        ),
    ] = None
    pruning: Pruning | None = None
    clustering: Clustering | None = None
    qat: QuantizationAwareTraining | None = None
    fine_tuning_data: Annotated[
        str | None,
        Field(
            description=".npz with 'x' (and 'y') for pruning/clustering/QAT fine-tuning, relative to model.yaml; "
            "default: data.calibration's inputs, distilled from the float model"
        ),
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
                "quantization and variants are both set; keep variants (e.g. [litert-"
                + self.quantization.value.replace("none", "float32")
                + "]) and remove quantization"
            )
        return self


def _number(value: Any) -> Any:
    """A serving setting is a number as YAML or JSON writes one: not a boolean or a string (the server
    takes neither). Integral floats pass: Pulumi state hands every number back as one."""
    if isinstance(value, (bool, str)):
        raise ValueError(f"{value!r} is not a number; write the number without quotes")
    return value


Number = BeforeValidator(_number)


def _bounds(setting: ServerSetting[Any]) -> dict[str, Any]:
    """The pydantic Field of one of the server's settings: its bounds and its description."""
    if setting.choices:  # checked by the field's validator; the schema lists them
        return {"description": setting.description, "json_schema_extra": {"enum": list(setting.choices)}}
    if setting.pattern is not None:  # checked by the field's validator, which says how to write it
        return {"description": setting.description}
    return {"ge": setting.low, "le": setting.high, "description": setting.description}


class Serving(_Strict):
    """The server's settings. Defaults, bounds and descriptions are the server's own
    (serving/config.py: SETTINGS), so the two cannot disagree."""

    port: Annotated[int, Field(**_bounds(sc.PORT)), Number] = sc.PORT.default
    grpc_port: Annotated[
        Annotated[int, Field(ge=sc.GRPC_PORT.low, le=sc.GRPC_PORT.high), Number] | None,
        Field(description=sc.GRPC_PORT.description),
    ] = sc.GRPC_PORT.default
    threads: Annotated[int, Field(**_bounds(sc.THREADS)), Number] = sc.THREADS.default
    max_batch_size: Annotated[int, Field(**_bounds(sc.MAX_BATCH_SIZE_SETTING)), Number] = (
        sc.MAX_BATCH_SIZE_SETTING.default
    )
    max_latency_ms: Annotated[float, Field(**_bounds(sc.MAX_LATENCY_MS)), Number] = sc.MAX_LATENCY_MS.default
    max_body_bytes: Annotated[int, Field(**_bounds(sc.MAX_BODY_BYTES)), Number] = sc.MAX_BODY_BYTES.default
    api_key_env: Annotated[str | None, Field(**_bounds(sc.API_KEY_ENV))] = sc.API_KEY_ENV.default
    max_connections: Annotated[int, Field(**_bounds(sc.MAX_CONNECTIONS)), Number] = sc.MAX_CONNECTIONS.default
    max_buffered_bytes: Annotated[int, Field(**_bounds(sc.MAX_BUFFERED_BYTES)), Number] = sc.MAX_BUFFERED_BYTES.default
    max_header_bytes: Annotated[int, Field(**_bounds(sc.MAX_HEADER_BYTES)), Number] = sc.MAX_HEADER_BYTES.default
    max_headers: Annotated[int, Field(**_bounds(sc.MAX_HEADERS)), Number] = sc.MAX_HEADERS.default
    request_timeout_s: Annotated[float, Field(**_bounds(sc.REQUEST_TIMEOUT_S)), Number] = sc.REQUEST_TIMEOUT_S.default
    idle_timeout_s: Annotated[float, Field(**_bounds(sc.IDLE_TIMEOUT_S)), Number] = sc.IDLE_TIMEOUT_S.default
    max_audio_seconds: Annotated[float, Field(**_bounds(sc.MAX_AUDIO_SECONDS)), Number] = sc.MAX_AUDIO_SECONDS.default
    max_sequences: Annotated[int, Field(**_bounds(sc.MAX_SEQUENCES)), Number] = sc.MAX_SEQUENCES.default
    max_queued_sequences: Annotated[int, Field(**_bounds(sc.MAX_QUEUED_SEQUENCES)), Number] = (
        sc.MAX_QUEUED_SEQUENCES.default
    )
    context_length: Annotated[int, Field(**_bounds(sc.CONTEXT_LENGTH)), Number] = sc.CONTEXT_LENGTH.default
    cpu_wait: Annotated[str, Field(**_bounds(sc.CPU_WAIT))] = sc.CPU_WAIT.default

    @model_validator(mode="after")
    def _two_ports(self) -> Serving:
        if self.grpc_port == self.port:
            raise ValueError(f"grpc_port and port are both {self.port}; give the gRPC service its own port, e.g. 8001")
        return self

    @model_validator(mode="after")
    def _buffer_holds_a_body(self) -> Serving:
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) is below max_body_bytes "
                f"({self.max_body_bytes}): no request of the largest size could be held; raise "
                "max_buffered_bytes or lower max_body_bytes"
            )
        return self

    @field_validator(*(name for name, s in sc.SETTINGS.items() if s.choices), mode="before")
    @classmethod
    def _one_of(cls, value: Any, info: ValidationInfo) -> Any:
        choices = sc.SETTINGS[str(info.field_name)].choices
        if value not in choices:
            raise ValueError(f"{value!r} is not one of the choices; write one of {', '.join(choices)}")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(sc.API_KEY_ENV_PATTERN, value):
            raise ValueError(
                f"{value!r} is not an environment variable name; use upper-case letters, digits "
                "and '_', e.g. MODELSTACK_API_KEY"
            )
        return value


CPU_RE = re.compile(r"^(?:[1-9][0-9]*m|[0-9]+(?:\.[0-9]{1,3})?)$")
REGISTRY_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_NAME_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_RE = re.compile(r"^(|[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
PERCENT_RE = re.compile(r"^(100|[1-9]?[0-9])%$")


def cpu_millis(value: str) -> int:
    """A Kubernetes CPU quantity (250m, 0.5, 2) in millicores."""
    return int(value[:-1]) if value.endswith("m") else round(float(value) * 1000)


class ServiceType(StrEnum):
    cluster_ip = "ClusterIP"
    node_port = "NodePort"
    load_balancer = "LoadBalancer"


class Resources(_Strict):
    """A CPU and memory quantity pair, as Kubernetes writes them (cpu: 250m or 0.5; memory: 256Mi)."""

    cpu: Annotated[str, Field(description="CPU: millicores like 250m, or cores like 0.5 or 2")]
    memory: Annotated[str, Field(description="Memory, e.g. 256Mi or 1Gi")]

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: object) -> object:
        text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not CPU_RE.match(text) or cpu_millis(text) < 1:
            raise ValueError(f"{value!r} is not a CPU quantity; write millicores like 250m or cores like 0.5")
        return text

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not MEMORY_RE.match(value) or memory_bytes(value) < 16 * 1024**2:
            raise ValueError(f"{value!r} is not a memory size of at least 16Mi; write it like 256Mi or 1Gi")
        return value


class PodResources(_Strict):
    """What the scheduler reserves for each pod (requests) and what it may use at most (limits)."""

    requests: Annotated[Resources, Field(default_factory=lambda: Resources(cpu="250m", memory="256Mi"))]
    limits: Annotated[Resources, Field(default_factory=lambda: Resources(cpu="1", memory="512Mi"))]

    @model_validator(mode="after")
    def _requests_within_limits(self) -> PodResources:
        if cpu_millis(self.requests.cpu) > cpu_millis(self.limits.cpu):
            raise ValueError(
                f"requests.cpu {self.requests.cpu} is above limits.cpu {self.limits.cpu}; "
                "lower the request or raise the limit"
            )
        if memory_bytes(self.requests.memory) > memory_bytes(self.limits.memory):
            raise ValueError(
                f"requests.memory {self.requests.memory} is above limits.memory {self.limits.memory}; "
                "lower the request or raise the limit"
            )
        return self


class Autoscaling(_Strict):
    """A HorizontalPodAutoscaler (autoscaling/v2) owns the replica count between min and max."""

    min_replicas: Annotated[int, Field(ge=1, le=10_000)] = 2
    max_replicas: Annotated[int, Field(ge=1, le=10_000)] = 10
    cpu_utilization: Annotated[
        int,
        Field(
            ge=1,
            le=1000,
            description="Target average CPU use, in percent of the pods' CPU request",
        ),
    ] = 70

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}; "
                "make max_replicas at least min_replicas"
            )
        return self


class DisruptionBudget(_Strict):
    """A PodDisruptionBudget: how many pods voluntary disruptions (node drains) may take at once."""

    min_available: Annotated[
        int | str | None, Field(description="Pods that must stay up: a count or a percentage like 50%")
    ] = None
    max_unavailable: Annotated[
        int | str | None,
        Field(
            description="Pods that may be down: a count or a percentage (default: 1 when min_available is not set)",
        ),
    ] = None

    @field_validator("min_available", "max_unavailable")
    @classmethod
    def _count_or_percent(cls, value: int | str | None) -> int | str | None:
        if (
            isinstance(value, bool)
            or (isinstance(value, int) and value < 0)
            or (isinstance(value, str) and not PERCENT_RE.match(value))
        ):
            raise ValueError(
                f"{value!r} is not a pod count or a percentage; write a whole number like 1 or a percentage like 50%"
            )
        return value

    @model_validator(mode="after")
    def _one(self) -> DisruptionBudget:
        if self.min_available is not None and self.max_unavailable is not None:
            raise ValueError("sets both min_available and max_unavailable; keep one and remove the other")
        return self

    @property
    def effective(self) -> dict[str, int | str]:
        """What the PodDisruptionBudget says: the one bound set, else at most 1 pod down."""
        if self.min_available is not None:
            return {"min_available": self.min_available}
        return {"max_unavailable": 1 if self.max_unavailable is None else self.max_unavailable}


class Toleration(_Strict):
    key: Annotated[str, Field(min_length=1, max_length=253)]
    operator: Literal["Equal", "Exists"] = "Equal"
    value: Annotated[str | None, Field(max_length=63)] = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


# -- deploy.rollout: how a new version replaces the one serving (issue 22) ------------------------


class RolloutStrategy(StrEnum):
    rolling = "rolling"  # start the new replicas, switch when ready, drain the old: proves it is up
    canary = "canary"  # a share of live requests to the new version, judged against the old, step by step
    shadow = "shadow"  # a copy of live requests to the new version (answers discarded), judged, then switched


class Inconclusive(StrEnum):
    fail = "fail"  # too few samples in a window: roll back
    hold = "hold"  # too few samples: hold the step for another window, up to analysis.max_holds times


class RolloutStep(_Strict):
    weight: Annotated[
        int,
        Field(
            ge=1,
            le=99,
            description=(
                "canary: percent of live requests the new version answers; shadow: percent of live requests copied to it"
            ),
        ),
    ]
    hold: Annotated[float, Field(ge=1, le=3600, description="Seconds the step lasts: its analysis window")] = 30.0


class RolloutAnalysis(_Strict):
    """Each step's judgement, new version against the old over the step's window, side by side."""

    max_error_rate_increase: Annotated[
        float,
        Field(
            ge=0,
            le=1,
            description=("The new version's rate of 5xx and timed-out requests may exceed the old one's by this much"),
        ),
    ] = 0.01
    max_p99_ratio: Annotated[
        float,
        Field(ge=1, le=100, description=("The new version's p99 latency may be at most this many times the old one's")),
    ] = 2.0
    min_agreement: Annotated[
        float | None,
        Field(
            ge=0,
            le=1,
            description=(
                "Classifiers: least share of replayed live requests on which both versions give the same top-1 "
                "class; null: 2 x the old version's prep accuracy - 1 (two models that good disagree at most that often)"
            ),
        ),
    ] = None
    min_cosine: Annotated[
        float | None,
        Field(
            ge=-1,
            le=1,
            description=(
                "Embeddings: least mean cosine between both versions' outputs; null: 2 x the old version's prep cosine - 1"
            ),
        ),
    ] = None
    max_mae: Annotated[
        float | None,
        Field(
            ge=0,
            description=(
                "Regressors: largest mean absolute difference between both versions' outputs; null: 2 x the old version's prep MAE"
            ),
        ),
    ] = None
    min_samples: Annotated[
        int,
        Field(
            ge=1,
            le=1_000_000,
            description=(
                "Fewest requests the new version must see in a window (and fewest replayed for agreement) to judge it; "
                "fewer is inconclusive, never a pass"
            ),
        ),
    ] = 50
    inconclusive: Inconclusive = Inconclusive.fail
    max_holds: Annotated[
        int, Field(ge=0, le=100, description="inconclusive: hold: windows a step may be held before it fails")
    ] = 2


class Rollout(_Strict):
    strategy: RolloutStrategy = RolloutStrategy.rolling
    steps: Annotated[
        list[RolloutStep],
        Field(
            min_length=1,
            max_length=20,
            description=("canary: increasing weights, each held and judged; the new version takes 100% after the last"),
        ),
    ] = [RolloutStep(weight=10, hold=30.0), RolloutStep(weight=50, hold=30.0)]
    analysis: RolloutAnalysis = RolloutAnalysis()

    @model_validator(mode="after")
    def _increasing(self) -> Rollout:
        weights = [step.weight for step in self.steps]
        if self.strategy == RolloutStrategy.canary and weights != sorted(set(weights)):
            raise ValueError(f"canary step weights {weights} must increase from step to step, e.g. 10 then 50")
        return self


class _DeployCommon(_Strict):
    """What every target's deploy section takes, beside the target's own settings."""

    target: Annotated[
        str,
        Field(
            description="docker: one Docker host; kubernetes: a cluster. Each target's settings sit directly under deploy",
        ),
    ]
    base_image: Annotated[str, Field(min_length=1)] = DEFAULT_BASE_IMAGE
    rollout: Annotated[
        Rollout, Field(description="How a new version replaces the one serving: rolling, canary or shadow")
    ] = Rollout()

    @field_validator("base_image")
    @classmethod
    def _own_name(cls, value: str) -> str:
        if not value.startswith("modelstack-"):
            raise ValueError(
                f"{value!r} is not a locally built image (no registry is reachable); "
                f"use {DEFAULT_BASE_IMAGE} or another image named modelstack-*"
            )
        return value


class DockerDeploy(_DeployCommon):
    """deploy.target: docker (the default): replicas behind an nginx proxy on one Docker host."""

    target: Literal["docker"] = "docker"
    replicas: Annotated[int, Field(ge=1, le=16, description="Model containers behind the proxy")] = 1
    cpus: Annotated[float, Field(gt=0.0, le=64.0)] = 1.0
    memory: Annotated[str, Field(description="Memory limit, e.g. 512Mi or 2Gi")] = "512Mi"
    bind_address: IPv4Address = IPv4Address("127.0.0.1")
    host_port: Annotated[
        int, Field(ge=1024, le=65535, description="The proxy's port on the host: the one users call")
    ] = 8501
    grpc_host_port: Annotated[
        int | None,
        Field(
            ge=1024,
            le=65535,
            description="The proxy's gRPC port on the host (to serving.grpc_port of the replicas); null: gRPC is not published",
        ),
    ] = None
    ready_timeout: Annotated[
        float,
        Field(gt=0, le=600, description="Seconds a new version has to become ready before the rollout is abandoned"),
    ] = 60.0

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        match = MEMORY_RE.match(value)
        if not match or memory_bytes(value) < 16 * 1024**2:
            raise ValueError(f"{value!r} is not a memory size of at least 16Mi; write it like 512Mi or 2Gi")
        return value

    @model_validator(mode="after")
    def _two_host_ports(self) -> DockerDeploy:
        if self.grpc_host_port == self.host_port:
            raise ValueError(
                f"grpc_host_port and host_port are both {self.host_port}; publish gRPC on its own port, e.g. 8001"
            )
        return self


class KubernetesDeploy(_DeployCommon):
    """deploy.target: kubernetes: where and how the cluster runs the image (pulumi-kubernetes)."""

    target: Literal["kubernetes"]
    kubeconfig: Annotated[
        str | None,
        Field(
            description="Kubeconfig file, relative to model.yaml or absolute; default: the usual rules ($KUBECONFIG, else ~/.kube/config)",
        ),
    ] = None
    context: Annotated[
        str | None, Field(min_length=1, description="Kubeconfig context; default: its current context")
    ] = None
    namespace: Annotated[str, Field(description="Namespace the service runs in (it must exist)")] = "default"
    registry: Annotated[
        str,
        Field(
            description="Registry (and path) the image is pushed to, e.g. 127.0.0.1:5000 or registry.example.com/ml; "
            "pods pull it by digest",
        ),
    ]
    replicas: Annotated[int, Field(ge=0, le=10_000, description="Pods (without autoscaling)")] = 2
    resources: Annotated[PodResources, Field(default_factory=PodResources)]
    autoscaling: Annotated[
        Autoscaling | None, Field(description="Scale with a HorizontalPodAutoscaler; replicas is then ignored")
    ] = None
    disruption_budget: DisruptionBudget = DisruptionBudget()
    service_type: ServiceType = ServiceType.cluster_ip
    labels: Annotated[dict[str, str], Field(description="Extra labels on every object and pod")] = {}
    annotations: Annotated[dict[str, str], Field(description="Extra annotations on every object and pod")] = {}
    node_selector: Annotated[dict[str, str], Field(description="Schedule pods only on nodes with these labels")] = {}
    tolerations: Annotated[list[Toleration], Field(max_length=32, description="Taints the pods tolerate")] = []
    startup_timeout: Annotated[
        int, Field(ge=5, le=3600, description="Seconds a pod has to load and warm up its model before it is restarted")
    ] = 120
    progress_deadline: Annotated[
        int,
        Field(
            ge=10,
            le=7200,
            description="Seconds a rollout may take before `pulumi up` fails; Kubernetes also marks it failed after this "
            "long without progress. The old pods keep serving",
        ),
    ] = 300

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not NAMESPACE_RE.match(value):
            raise ValueError(
                f"{value!r} is not a namespace name; use lower-case letters, digits and '-' "
                "(at most 63, starting and ending with a letter or digit)"
            )
        return value

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        if not REGISTRY_RE.match(value):
            raise ValueError(
                f"{value!r} is not a registry address; write a host with an optional :port and /path and no tag, "
                "e.g. 127.0.0.1:5000 or registry.example.com/ml"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not LABEL_NAME_RE.match(key):
                raise ValueError(
                    f"{key!r} is not a label name; use letters, digits, '-', '_', '.' (at most 63, optionally prefixed by a DNS name and '/')"
                )
            if not LABEL_VALUE_RE.match(item):
                raise ValueError(
                    f"{item!r} (label {key}) is not a label value; use at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit"
                )
            if key.startswith("app.kubernetes.io/") or key.startswith("modelstack.dev/"):
                raise ValueError(f"{key!r} is set by modelstack; choose another label name")
        return value

    @field_validator("annotations", "node_selector")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_NAME_RE.match(key):
                raise ValueError(
                    f"{key!r} is not a valid key; use letters, digits, '-', '_', '.' (at most 63, optionally prefixed by a DNS name and '/')"
                )
        return value


DEPLOY_SECTIONS: dict[str, type[DockerDeploy] | type[KubernetesDeploy]] = {
    "docker": DockerDeploy,
    "kubernetes": KubernetesDeploy,
}


def _deploy_target(value: object) -> str | None:
    """Which section a deploy mapping is: its target as written, docker when it names none."""
    if isinstance(value, dict):
        target = value.get("target", "docker")
        return target if isinstance(target, str) else None
    return getattr(value, "target", None)


# One section per target, told apart by `target`: each holds its own settings and nothing else, so a
# docker setting under target kubernetes (or the reverse) is an unknown field, named as such.
Deploy = Annotated[
    Annotated[DockerDeploy, Tag("docker")] | Annotated[KubernetesDeploy, Tag("kubernetes")],
    Discriminator(
        _deploy_target, custom_error_type="deploy_target", custom_error_message="deploy.target is not a known target"
    ),
]


class ModelSpec(_Strict):
    """What a user writes in model.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="modelstack model spec")

    name: Annotated[str, Field(pattern=NAME_RE, description="Service name: lower case letters, digits, dashes")]
    model: ModelSource
    data: DataFiles
    optimize: Optimize = Optimize()
    serving: Serving = Serving()
    deploy: Deploy = DockerDeploy()


def memory_bytes(value: str) -> int:
    match = MEMORY_RE.match(value)
    if not match:
        raise ValueError(value)
    return int(match.group(1)) * MEMORY_UNITS[match.group(2)]


class Locations(BaseModel):
    """Where each field of a spec file was written, so any stage can say `model.yaml:14` in an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = "model.yaml"  # the spec file's name, as errors show it
    lines: dict[str, int] = {}  # dotted field path ("optimize.variants", "model.inputs.0") → line

    def where(self, path: str) -> str:
        """file:line of the deepest part of the dotted `path` that the file spells out."""
        parts = path.split(".") if path else []
        for end in range(len(parts), -1, -1):
            line = self.lines.get(".".join(parts[:end]))
            if line is not None:
                return f"{self.file}:{line}"
        return self.file


class ResolvedSpec(BaseModel):
    """The spec with every default filled in and every path absolute. Plain data: it is
    passed to Pulumi providers as JSON and must round-trip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_file: str
    spec: ModelSpec
    model_path: str
    calibration_path: str
    evaluation_path: str
    fine_tuning_path: str | None = None
    locations: Locations = Locations()
    model_format: ModelFormat = ModelFormat.keras  # as written, or inferred from the model's files

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def task(self) -> Task:
        """The model's task: as written, else its format's default."""
        return self.spec.model.resolved_task(self.model_format)

    def where(self, path: str) -> str:
        """Where a field is written, e.g. `where("optimize.variants")` → "model.yaml:14"."""
        return self.locations.where(path)

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's input signature: as written, or the one text input of a Hugging Face model."""
        return self.spec.model.signature
