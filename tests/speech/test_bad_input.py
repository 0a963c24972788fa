"""Every bad input to the speech routes is a 4xx naming the part, and the server stays up."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests
from speech_support import ESPEAK_RATE, RunningServer, encode

URL = "/v1/audio/transcriptions"


def post(server: RunningServer, files: dict | None = None, data: dict | None = None, **kw) -> requests.Response:  # type: ignore[type-arg]
    return requests.post(server.url + URL, files=files, data=data, timeout=120, **kw)


@pytest.mark.parametrize(
    ("files", "data", "status", "says"),
    [
        ({"file": ("a.wav", b"")}, {"model": "whisper"}, 400, "file: is empty"),
        (
            {"file": ("a.txt", b"this is plain text, not audio at all\n" * 20)},
            {"model": "whisper"},
            400,
            "file: could not be decoded as audio",
        ),
        ({"file": ("a.bin", bytes(range(256)) * 40)}, {"model": "whisper"}, 400, "file: could not be decoded"),
        ({"file": ("a.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ")}, {"model": "whisper"}, 400, "file:"),
        ({"other": ("a.wav", b"x")}, {"model": "whisper"}, 400, "file: required form part is missing"),
        ({"file": ("a.wav", b"x")}, {}, 400, "model: required form field is missing"),
        ({"file": ("a.wav", b"x")}, {"model": "gpt-4o"}, 404, 'model: "gpt-4o" is not served here'),
        (
            {"file": ("a.wav", b"x")},
            {"model": "whisper", "response_format": "xml"},
            400,
            "response_format: must be one of",
        ),
        ({"file": ("a.wav", b"x")}, {"model": "whisper", "temperature": "hot"}, 400, "temperature: must be a number"),
        ({"file": ("a.wav", b"x")}, {"model": "whisper", "temperature": "1.5"}, 400, "temperature: must be a number"),
        (
            {"file": ("a.wav", b"x")},
            {"model": "whisper", "language": "fr"},
            400,
            "language: this model transcribes English only",
        ),
        ({"file": ("a.wav", b"x")}, {"model": "whisper", "prompt": "p" * 70_000}, 400, "prompt: form field is over"),
    ],
)
def test_bad_form(speech_server: RunningServer, files: dict, data: dict, status: int, says: str) -> None:  # type: ignore[type-arg]
    reply = post(speech_server, files, data)
    assert reply.status_code == status, reply.text
    assert says in reply.json()["error"]


def test_not_multipart(speech_server: RunningServer) -> None:
    reply = requests.post(speech_server.url + URL, json={"file": "x"}, timeout=10)
    assert reply.status_code == 400
    assert reply.json()["error"].startswith('body: Content-Type is "application/json"; send multipart/form-data')


def test_malformed_multipart(speech_server: RunningServer) -> None:
    reply = requests.post(
        speech_server.url + URL,
        data=b"--b\r\nnot a header line at all",
        timeout=10,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("body:")


def test_too_long_audio_is_413_with_the_limit(speech_server: RunningServer) -> None:
    # 160 s of near-silence as 8 kHz FLAC: small on the wire, over the server's 150 s limit.
    data = encode(np.zeros(160 * 8000, dtype=np.float32), 8000, "flac")
    reply = post(speech_server, {"file": ("long.flac", data)}, {"model": "whisper"})
    assert reply.status_code == 413, reply.text
    assert "the limit is 150 s (serving.max_audio_seconds)" in reply.json()["error"]


def test_body_over_the_cap_is_413_with_the_limit(speech_server: RunningServer) -> None:
    reply = post(speech_server, {"file": ("big.wav", b"\0" * (7 * 1024 * 1024))}, {"model": "whisper"})
    assert reply.status_code == 413
    assert str(6 * 1024 * 1024) in reply.text


def test_v2_bad_tensors(speech_server: RunningServer) -> None:
    url = speech_server.url + "/v2/models/whisper/infer"
    good = base64.b64encode(encode(np.zeros(8000, dtype=np.float32), 16000, "wav")).decode()
    cases = [
        ({"inputs": []}, "inputs: must be a list with one BYTES tensor"),
        (
            {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [good]}]},
            'inputs[0].name: must be "audio"',
        ),
        (
            {"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
            'inputs[0].datatype: must be "BYTES"',
        ),
        (
            {"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [2], "data": [good, good]}]},
            "inputs[0].shape: must be [1]",
        ),
        (
            {"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}]},
            "inputs[0].data: is not base64",
        ),
        (
            {
                "inputs": [
                    {"name": "audio", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(b"text").decode()]}
                ]
            },
            "inputs[0].data: could not be decoded as audio",
        ),
        ({"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": [""]}]}, "inputs[0].data: is empty"),
        (
            {
                "parameters": {"language": 7},
                "inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": [good]}],
            },
            "parameters.language: must be a string",
        ),
        (
            {
                "parameters": {"temperature": "hot"},
                "inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": [good]}],
            },
            "parameters.temperature: must be a number",
        ),
    ]
    for doc, says in cases:
        reply = requests.post(url, json=doc, timeout=60)
        assert reply.status_code == 400, (doc, reply.text)
        assert says in reply.json()["error"], reply.text


def test_server_stays_up_and_still_transcribes(speech_server: RunningServer, sentence_audio: np.ndarray) -> None:
    for _ in range(3):
        post(speech_server, {"file": ("a.txt", b"garbage")}, {"model": "whisper"})
    assert requests.get(speech_server.url + "/healthz", timeout=10).status_code == 200
    reply = post(speech_server, {"file": ("a.wav", encode(sentence_audio, ESPEAK_RATE, "wav"))}, {"model": "whisper"})
    assert reply.status_code == 200 and "free software" in reply.json()["text"].lower()
