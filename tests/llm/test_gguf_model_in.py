"""The model side of a GGUF, no runtime: the tiny model's metadata, the spec's inference of format
and task, the llm family's request and its located errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_support import write_spec

from iac.spec.errors import UserError
from iac.spec.load import load_resolved
from iac.spec.models import Metric, ModelFormat
from modelprep.families import family_of_format
from modelprep.families.llm import metadata, tiny
from modelprep.families.llm.family import resolve_context


def test_tiny_gguf_carries_what_a_chat_model_needs(tiny_gguf: Path) -> None:
    info = metadata.read(tiny_gguf)
    tokens, _, _ = tiny.vocabulary()
    assert (info.architecture, info.context_length, info.vocabulary) == ("llama", 512, len(tokens))
    assert (info.bos, info.eos) == ("<s>", "<|im_end|>")
    assert info.chat_template == tiny.CHAT_TEMPLATE and "<|im_start|>" in info.chat_template
    assert info.file_type == "MOSTLY_F16"
    assert info.tensor_bytes < tiny_gguf.stat().st_size < 4 * 1024**2


def test_tiny_gguf_is_deterministic(tmp_path: Path, tiny_gguf: Path) -> None:
    assert tiny.build(tmp_path / "again.gguf").read_bytes() == tiny_gguf.read_bytes()


def test_a_file_that_is_not_gguf_is_located_at_model_path(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(UserError) as info:
        metadata.read(bad, "model.yaml:4")
    [problem] = info.value.problems
    assert (problem.where, problem.path) == ("model.yaml:4", "model.path")
    assert "not a GGUF file" in problem.problem


def test_request_reads_the_context_from_the_file(chat_folder: Path) -> None:
    spec = load_resolved(write_spec(chat_folder))
    assert spec.model_format == ModelFormat.gguf
    req = family_of_format("gguf").request(spec)
    assert req.family_settings == {"context_length": 512}  # serving.context_length unset: the model's own
    assert req.optimize.metric == Metric.kl
    assert req.optimize.max_accuracy_drop == 0.1  # the shared gate's allowance: max_kl's default
    names = [c.variant.name for c in family_of_format("gguf").candidates(req)]
    assert names == ["gguf-source", "gguf-q8_0", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q4_0"]


def test_another_metric_is_refused_at_its_line(chat_folder: Path) -> None:
    spec = load_resolved(write_spec(chat_folder, "optimize:\n  metric: cosine\n"))
    with pytest.raises(UserError) as info:
        family_of_format("gguf").request(spec)
    [problem] = info.value.problems
    assert (problem.where, problem.path) == ("model.yaml:8", "optimize.metric")
    assert "does not score a text-generation model" in problem.problem and "max_kl" in problem.fix


def test_a_context_longer_than_the_model_was_trained_for_is_refused(tiny_gguf: Path) -> None:
    info = metadata.read(tiny_gguf)
    assert resolve_context(0, info, "model.yaml:9") == 512 and resolve_context(128, info, "model.yaml:9") == 128
    with pytest.raises(UserError) as raised:
        resolve_context(1024, info, "model.yaml:9")
    [problem] = raised.value.problems
    assert (problem.where, problem.path) == ("model.yaml:9", "serving.context_length")
    assert "1024 tokens is more than" in problem.problem and "(512)" in problem.problem


def test_variants_of_another_family_are_refused_at_their_line(chat_folder: Path) -> None:
    spec = load_resolved(write_spec(chat_folder, "optimize:\n  variants: [gguf-q8_0, litert-int8]\n"))
    family = family_of_format("gguf")
    with pytest.raises(UserError) as info:
        family.candidates(family.request(spec))
    [problem] = info.value.problems
    assert (problem.where, problem.path) == ("model.yaml:8", "optimize.variants")
    assert "litert-int8 cannot be made from a GGUF model" in problem.problem
