"""The speech family's prep on Whisper tiny.en: variants measured with the server's runtime, the WER gate
refusing a variant past the limit, the objective choosing among the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelprep.families.speech import CATALOGUE, FAMILY, WER, SpeechSession, corpus
from modelprep.families.speech.run import run
from modelprep.select import choose, gated


@pytest.fixture(scope="module")
def noisy_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 clips at 8 dB SNR: noisy enough that compute types and decodings disagree on some words."""
    made = corpus.make(12)
    rng = np.random.default_rng(1)
    pieces = [corpus.add_noise(made.clip(i), 8.0, rng) for i in range(len(made.clips))]
    noisy = corpus.EvaluationSet(np.concatenate(pieces), made.clips)
    path = tmp_path_factory.mktemp("speech") / "noisy.npz"
    corpus.save(noisy, path)
    return path


def test_corpus_is_real_prose_with_transcripts(noisy_set: Path) -> None:
    dataset = corpus.load(noisy_set)
    assert len(dataset.clips) == 12
    assert {c.engine for c in dataset.clips} == {"espeak-ng", "flite"}
    assert all(6 <= len(c.text.split()) <= 24 for c in dataset.clips)
    assert len(corpus.sentences()) >= 150
    assert 1.0 < dataset.clip(0).shape[0] / corpus.SAMPLE_RATE < 20.0


def test_gate_refuses_a_variant_past_the_wer_limit(whisper_dir: Path, noisy_set: Path) -> None:
    session = SpeechSession(whisper_dir, noisy_set, threads=1)
    names = ["ct2-float32", "ct2-int8", "ct2-int8-beam5"]  # int8_float32 is what int8 runs as on CPU
    everything = run(session, names, max_accuracy_drop=1.0)
    rows = {r.name: r for r in everything.variants}
    assert set(rows) == set(names)
    assert everything.chosen is not None and all(r.passed_gate for r in rows.values())
    float32 = rows["ct2-float32"]
    assert float32.accuracy == everything.baseline.accuracy
    assert rows["ct2-int8"].notes.resident_bytes < float32.notes.resident_bytes  # int8 weights in memory
    assert all(r.notes.real_time_factor and r.notes.real_time_factor > 0 for r in rows.values())

    worst = max(rows.values(), key=lambda r: r.accuracy)
    increase = worst.accuracy - float32.accuracy
    assert increase > 0, (
        f"no variant is worse than float32 on these clips ({[(r.name, r.accuracy) for r in rows.values()]})"
    )
    limit = increase / 2
    regated = gated(list(rows.values()), float32.accuracy, WER, limit)
    verdict = {r.name: r.passed_gate for r in regated}
    assert verdict[worst.name] is False
    assert verdict["ct2-float32"] is True
    _picked, chosen, _ = choose(regated, "smallest", limit)
    assert chosen is not None and chosen != worst.name


def test_family_refuses_other_metrics_and_foreign_variants() -> None:
    from iac.spec.errors import UserError
    from iac.spec.models import Optimize
    from modelprep.request import PrepRequest

    req = PrepRequest(
        model_path="/m",
        calibration_path="/e.npz",
        evaluation_path="/e.npz",
        input_name="audio",
        sample_shape=(),
        optimize=Optimize(metric="wer", variants=["ct2-int8", "ct2-float32"]),
    )
    assert [c.variant.name for c in FAMILY.candidates(req)] == ["ct2-float32", "ct2-int8"]
    assert FAMILY.variant_settings(req, CATALOGUE["ct2-int8-beam5"]) == {"compute_type": "int8", "beam_size": 5}
    with pytest.raises(UserError, match="litert-int8 cannot be made from a CTranslate2 Whisper model"):
        FAMILY.candidates(req.changed(optimize={"variants": ["litert-int8"]}))
    with pytest.raises(UserError, match="accuracy does not apply to speech recognition"):
        FAMILY.candidates(req.changed(optimize={"metric": "accuracy", "variants": None}))
