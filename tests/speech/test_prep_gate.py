"""The speech family's prep on Whisper tiny.en, through the one prep loop (`modelprep.prep.prep`): variants
measured with the server's runtime, the WER gate refusing a variant past the limit, the objective choosing
among the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iac.spec.models import Optimize
from modelprep.cache import Cache
from modelprep.families.speech import CATALOGUE, FAMILY, corpus, settings_of
from modelprep.hashing import file_sha256
from modelprep.prep import prep
from modelprep.request import PrepRequest
from serving.speech import SETTINGS_FILE


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


def test_gate_refuses_a_variant_past_the_wer_limit(whisper_dir: Path, noisy_set: Path, tmp_path: Path) -> None:
    names = ["ct2-float32", "ct2-int8", "ct2-int8-beam5"]  # int8_float32 is what int8 runs as on CPU
    req = PrepRequest(
        family="speech",
        model_path=str(whisper_dir),
        calibration_path=str(noisy_set),
        evaluation_path=str(noisy_set),
        input_name="audio",
        sample_shape=(),
        optimize=Optimize(metric="wer", max_accuracy_drop=1.0, variants=names),
    )
    cache = Cache(tmp_path)
    everything = prep(req, cache).report
    rows = {r.name: r for r in everything.variants}
    assert set(rows) == set(names)
    assert all(r.passed_gate for r in rows.values())
    float32 = rows["ct2-float32"]
    assert float32.accuracy == everything.baseline_accuracy
    assert rows["ct2-int8"].notes.resident_bytes < float32.notes.resident_bytes  # int8 weights in memory
    assert all(r.notes.real_time_factor and r.notes.real_time_factor > 0 for r in rows.values())

    worst = max(rows.values(), key=lambda r: r.accuracy)
    increase = worst.accuracy - float32.accuracy
    assert increase > 0, (
        f"no variant is worse than float32 on these clips ({[(r.name, r.accuracy) for r in rows.values()]})"
    )
    limit = increase / 2
    said: list[str] = []
    regated = prep(req.changed(optimize={"max_accuracy_drop": limit}), cache, progress=said.append)
    assert not regated.cached and not [line for line in said if line.startswith("measuring")]  # nothing re-measured
    verdict = {r.name: r.passed_gate for r in regated.report.variants}
    assert verdict[worst.name] is False
    assert verdict["ct2-float32"] is True
    assert regated.report.variant != worst.name
    # The artifact is the folder the image ships: the model's files and the chosen variant's settings.
    shipped = regated.artifact_path
    assert json.loads((shipped / SETTINGS_FILE).read_text()) == settings_of(CATALOGUE[regated.report.variant])
    assert (shipped / "model.bin").is_file() and file_sha256(shipped) == regated.report.artifact_sha256


def test_family_refuses_other_metrics_and_foreign_variants() -> None:
    from iac.spec.errors import UserError

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
