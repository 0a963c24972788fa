"""The huggingface family: a BERT-style text encoder in Hugging Face format (config.json, tokenizer.json,
model.safetensors), loaded into TensorFlow without PyTorch, exported once to ONNX with pooling inside,
and quantized by ONNX Runtime; measured through serving's `TextModel` against the TensorFlow model."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from iac.spec.errors import UserError
from iac.spec.models import Task
from modelprep.families.huggingface.session import CATALOG, TextSession
from modelprep.families.huggingface.settings import text_prep_request
from modelprep.family import Candidate, Family, Progress, Quality, SpecProblem, Step, Variant, Written
from modelprep.request import PrepRequest

if TYPE_CHECKING:
    from pathlib import Path

    from iac.spec.models import ModelSpec, ResolvedSpec
    from modelprep.cache import Cache
    from modelprep.report import Measure


class HuggingFaceFamily:
    name: str = "huggingface"
    formats: tuple[str, ...] = ("huggingface",)
    tasks: tuple[str, ...] = ("sentence-embedding", "text-classification")
    catalogue: Mapping[str, Variant] = CATALOG
    honours: frozenset[str] = frozenset({"objective", "metric", "top_k", "max_accuracy_drop", "variants", "min_cosine"})
    metrics: Mapping[str, Quality] = MappingProxyType(
        {"cosine": Quality("cosine"), "accuracy": Quality("accuracy"), "top_k": Quality("top_k")}
    )
    baseline: str = "tensorflow"
    reference: str | None = None  # the float32 ONNX graph is a candidate like the others
    gentle: tuple[str, ...] = ("onnx-float32", "onnx-float16")
    gate_field: str = "optimize.max_accuracy_drop"
    # ONNX Runtime and the tokenizer: the artifact carries tokenizer.json (serving.text).
    requirements: Mapping[str, str] = MappingProxyType({"onnx": "requirements-text.txt"})

    def spec_problems(self, spec: ModelSpec, folder: Path, written: Written) -> list[SpecProblem]:
        m, problems = spec.model, []
        if m.task is None:
            problems.append(
                SpecProblem(
                    ("model",),
                    "a huggingface model needs a task",
                    "add task: sentence-embedding or task: text-classification",
                )
            )
        problems += [
            SpecProblem(
                ("data", field), "a text model reads texts, not arrays", "use a .txt file (one text per line) or .jsonl"
            )
            for field in ("calibration", "evaluation")
            if getattr(spec.data, field).endswith(".npz")
        ]
        if spec.data.evaluation.endswith(".txt") and m.task == Task.text_classification:
            problems.append(
                SpecProblem(
                    ("data", "evaluation"),
                    "text-classification needs labelled texts",
                    'use .jsonl with {"text": ..., "label": ...} per line',
                )
            )
        metric = spec.optimize.metric
        allowed = ("cosine",) if m.task == Task.sentence_embedding else ("accuracy", "top_k")
        if m.task is not None and metric.value not in allowed and written(("optimize", "metric")):
            problems.append(
                SpecProblem(
                    ("optimize", "metric"),
                    f'"{metric.value}" does not score a {m.task.value} model',
                    f"use {' or '.join(allowed)}",
                )
            )
        model_folder = folder / m.path
        if model_folder.is_dir() and not (model_folder / "tokenizer.json").is_file():
            problems.append(
                SpecProblem(
                    ("model", "path"),
                    f"{m.path!r} has no tokenizer.json",
                    "save the tokenizer with the model (tokenizer.save_pretrained)",
                )
            )
        return problems

    def request(self, spec: ResolvedSpec, all_variants: bool = False) -> PrepRequest:
        return text_prep_request(spec, all_variants)

    def candidates(self, req: PrepRequest) -> list[Candidate]:
        o = req.optimize
        names = [v.value for v in o.variants] if o.variants is not None else list(CATALOG)
        unknown = [n for n in names if n not in CATALOG]
        if unknown:
            raise UserError.single(
                req.where("optimize.variants"),
                "optimize.variants",
                f"{', '.join(unknown)} cannot be made from a Hugging Face model",
                f"use some of {', '.join(CATALOG)}",
            )
        return [Candidate(variant, True) for name, variant in CATALOG.items() if name in names]

    def variant_settings(self, req: PrepRequest, variant: Variant) -> dict[str, Any]:
        return {"quantization": variant.quantization}

    def judge(self, req: PrepRequest, measure: Measure) -> str | None:
        o = req.optimize
        lowest = measure.notes.cosine_min
        if o.min_cosine is not None and o.metric.value == "cosine" and (lowest or 0.0) < o.min_cosine:
            return f"min cosine {lowest or 0.0:.4f} is below optimize.min_cosine {o.min_cosine}"
        return None

    def input_ranges(self, req: PrepRequest) -> dict[str, tuple[int, int]]:
        return {}  # no integer ids in its signature

    def session(self, req: PrepRequest, cache: Cache, progress: Progress, step: Step) -> TextSession:
        return TextSession(req, cache, progress)


FAMILY: Family = HuggingFaceFamily()  # checked against the contract by mypy
