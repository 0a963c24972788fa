"""The small pieces: WER normalisation, subtitle clocks, the serving.json checks, form limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelprep.families.speech.wer import normalise, wer
from serving.errors import ClientError
from serving.speech import check, formats, forms
from serving.speech.engine import Segment, Transcript


def test_normalisation_is_the_stated_one() -> None:
    assert normalise("Users' non-free, GPL’d  Software!") == "users non free gpld software"
    assert wer(["The cat sat."], ["the cat, sat"]) == 0.0
    assert wer(["one two three four"], ["one two four"]) == pytest.approx(0.25)
    # corpus-level: 1 edit in 1 word and 0 in 9 is 10%, not the 50% mean of per-clip rates
    assert wer(["a", "b c d e f g h i j"], ["x", "b c d e f g h i j"]) == pytest.approx(0.1)


def test_subtitles() -> None:
    segments = (
        Segment(0, 0, 0.0, 1.5, " Hello there.", (1,), 0.0, -0.1, 1.0, 0.01),
        Segment(1, 0, 3661.25, 3662.0, " Bye.", (2,), 0.0, -0.1, 1.0, 0.01),
    )
    assert (
        formats.srt(segments)
        == "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n"
    )
    assert formats.vtt(segments).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n")
    body, kind = formats.render(Transcript("Hello there. Bye.", "en", 3662.0, segments), "verbose_json")
    assert kind == b"application/json" and b'"segments":[{"id":0' in body


def test_serving_json_checks() -> None:
    assert check({"metadata": {"speech": {"compute_type": "int8", "beam_size": 5}}}) == []
    problems = check({"metadata": {"speech": {"compute_type": "float16", "beam_size": 0, "loud": True}}})
    assert any(p.startswith("metadata.speech.compute_type: must be one of") for p in problems)
    assert any(p.startswith("metadata.speech.beam_size: must be 1..16") for p in problems)
    assert any(p.startswith("metadata.speech.loud: unknown field") for p in problems)


def test_form_limits() -> None:
    boundary = "xyz"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n'
    body = (part * 40 + f"--{boundary}--\r\n").encode()
    with pytest.raises(ClientError, match="more than 32 form parts"):
        forms.parse(f"multipart/form-data; boundary={boundary}", body, frozenset())
    ok = forms.parse(f"multipart/form-data; boundary={boundary}", (part + f"--{boundary}--\r\n").encode(), frozenset())
    assert ok["f"].text() == "v"


def test_settings_come_from_the_model_folder_then_serving_json(tmp_path: Path) -> None:
    """Prep ships the chosen variant as the folder's speech.json; metadata.speech overrides it field by field."""
    from serving.config import ServingConfig
    from serving.speech import SETTINGS_FILE, settings

    def config(metadata: dict[str, object]) -> ServingConfig:
        return ServingConfig.from_dict(
            {"task": "speech-recognition", "model_name": "w", "artifact": str(tmp_path), "metadata": metadata}
        )

    assert settings(config({})).compute_type == "int8"  # no speech.json: the defaults
    (tmp_path / SETTINGS_FILE).write_text('{"compute_type": "float32", "beam_size": 5}')
    chosen = settings(config({}))
    assert (chosen.compute_type, chosen.beam_size, chosen.model_dir) == ("float32", 5, str(tmp_path))
    overridden = settings(config({"speech": {"beam_size": 1}}))
    assert (overridden.compute_type, overridden.beam_size) == ("float32", 1)
    (tmp_path / SETTINGS_FILE).write_text('{"compute_type": "int3"}')
    with pytest.raises(ValueError, match=r"speech.json.compute_type: must be one of"):
        settings(config({}))
