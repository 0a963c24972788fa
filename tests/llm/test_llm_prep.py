"""The tiny GGUF through llama.cpp: it loads and chats with its own template, and the llm family
re-quantizes it, measures every variant against the source and gates on optimize.max_kl."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_support import write_spec

from iac.spec.errors import UserError
from iac.spec.load import load_resolved
from modelprep.families import family_of_format
from modelprep.families.llm import tiny
from modelprep.families.llm.family import FAMILY, KL
from modelprep.families.llm.run import measure_and_choose
from modelprep.report import PrepReport
from modelprep.request import PrepRequest
from modelprep.select import gated

pytestmark = pytest.mark.llama

SETTINGS = """\
optimize:
  variants: [gguf-source, gguf-q8_0, gguf-q4_k_m, gguf-q4_0]
  max_kl: 0.05
  evaluation_tokens: 2000
"""


def test_tiny_gguf_loads_tokenizes_and_chats(tiny_gguf: Path) -> None:
    from modelprep.families.llm.evaluate import load

    llm = load(tiny_gguf, context=256, threads=1, logits_all=False)
    assert llm.n_vocab() == len(tiny.vocabulary()[0]) and llm.n_ctx() == 256
    assert llm.tokenize(b"<|im_end|>", add_bos=False, special=True) == [tiny.EOS]
    ids = llm.tokenize(b"the hacker serve hello", add_bos=False)
    assert len(ids) == 4  # whole words, merged from their prefixes
    assert llm.detokenize(ids).decode().strip() == "the hacker serve hello"
    assert len(llm.tokenize("naïve 日本".encode(), add_bos=False)) > 4  # unknown characters fall back to bytes
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0.0)
    assert out["usage"]["prompt_tokens"] > 4  # the ChatML template from the GGUF wrapped the message
    assert 1 <= out["usage"]["completion_tokens"] <= 8


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> tuple[PrepRequest, PrepReport]:
    from modelprep.examples.smollm import TEXT

    folder = tmp_path_factory.mktemp("chat")
    (folder / "model").mkdir()
    (folder / "model" / "tiny.gguf").symlink_to(tiny_gguf)
    (folder / "data").mkdir()
    (folder / "data" / "evaluation.txt").write_text(TEXT.read_text(encoding="utf-8"), encoding="utf-8")
    spec = load_resolved(write_spec(folder, SETTINGS))
    req = family_of_format("gguf").request(spec)
    return req, measure_and_choose(req, progress=lambda _: None)


def test_every_variant_is_measured_against_the_source(measured: tuple[PrepRequest, PrepReport]) -> None:
    _, report = measured
    rows = {v.name: v for v in report.variants}
    assert list(rows) == ["gguf-source", "gguf-q8_0", "gguf-q4_k_m", "gguf-q4_0"]
    assert report.evaluation_samples >= 2000
    source, q8, q4k, q4 = rows.values()
    assert source.accuracy < 1e-4 and source.notes.top1_agreement == 1.0  # the source against itself
    assert 0 < q8.accuracy < q4k.accuracy and q8.accuracy < q4.accuracy  # fewer bits, further away
    assert q8.notes.top1_agreement > q4.notes.top1_agreement
    assert source.size_bytes > q8.size_bytes > q4.size_bytes
    assert q4k.notes.tensor_types and "Q4_K" in q4k.notes.tensor_types  # 256-wide rows: K-quants apply
    for row in rows.values():
        assert row.notes.scored_tokens == report.evaluation_samples
        assert row.notes.perplexity and row.notes.perplexity > 1
        assert row.notes.generation_tokens_per_s and row.notes.generation_tokens_per_s > 0
        assert row.notes.prompt_tokens_per_s and row.notes.peak_rss_bytes and row.notes.context_length == 512
    assert report.baselines[0].baseline and report.baselines[0].accuracy == source.accuracy


def test_gate_refuses_the_variant_that_moves_too_far(measured: tuple[PrepRequest, PrepReport]) -> None:
    _, report = measured
    rows = {v.name: v for v in report.variants}
    assert not rows["gguf-q4_0"].passed_gate  # max_kl 0.05
    assert rows["gguf-q8_0"].passed_gate and rows["gguf-source"].passed_gate
    assert report.chosen.passed_gate and report.chosen.name != "gguf-q4_0"
    # The same measures under a looser gate: all pass.
    assert all(e.passed_gate for e in gated(report.variants, 0.0, KL, rows["gguf-q4_0"].accuracy * 2))


def test_min_agreement_refuses_too(measured: tuple[PrepRequest, PrepReport]) -> None:
    req, report = measured
    q8 = next(v for v in report.variants if v.name == "gguf-q8_0")
    strict = req.changed(optimize={"min_agreement": 1.0})
    why = FAMILY.judge(strict, q8)
    assert why and "below optimize.min_agreement 1.0" in why
    assert FAMILY.judge(req, q8) is None  # not set: not gated


def test_nothing_within_the_gate_is_a_located_user_error(chat_folder: Path) -> None:
    spec = load_resolved(
        write_spec(chat_folder, "optimize:\n  variants: [gguf-q4_0]\n  max_kl: 0.0001\n  evaluation_tokens: 256\n")
    )
    req = family_of_format("gguf").request(spec)
    with pytest.raises(UserError) as info:
        measure_and_choose(req, progress=lambda _: None)
    [problem] = info.value.problems
    assert (problem.where, problem.path) == ("model.yaml:9", "optimize.max_kl")
    assert "gguf-q4_0 raises kl by" in problem.problem and "gguf-source" in problem.fix
