"""Text models in the server: the tokenizer (the `tokenizers` library only), padding per batch, and the ONNX text runtime.

A text artifact is one ONNX file whose metadata carries what the server needs beside the graph:
the tokenizer.json, the task, the class labels, and the spec's max_length and truncation. Prep
measures every variant through `TextModel`, the class the server runs, so what the gate
approved is what is served.

A batch runs in groups of similar length, each padded to its own longest text (never to
max_length), so short requests do not pay for long ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ClientError, show
from serving.runtime import Feed

META_PREFIX = "modelstack."
BUCKET = 8
INPUTS = ("input_ids", "attention_mask")


class TextError(ClientError):
    """A client's text cannot be used (400, or 413 for a text over max_length with truncation refuse)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


@dataclass(frozen=True)
class TextSettings:
    task: str  # sentence-embedding | text-classification
    max_length: int
    truncation: str  # truncate | refuse
    labels: tuple[str, ...] = ()
    output: str = "sentence_embedding"

    def metadata(self, tokenizer_json: str) -> dict[str, str]:
        """The ONNX metadata_props that make an artifact a text model."""
        return {
            f"{META_PREFIX}task": self.task,
            f"{META_PREFIX}max_length": str(self.max_length),
            f"{META_PREFIX}truncation": self.truncation,
            f"{META_PREFIX}labels": json.dumps(list(self.labels)),
            f"{META_PREFIX}output": self.output,
            f"{META_PREFIX}tokenizer": tokenizer_json,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> TextSettings:
        return cls(
            task=meta[f"{META_PREFIX}task"],
            max_length=int(meta[f"{META_PREFIX}max_length"]),
            truncation=meta[f"{META_PREFIX}truncation"],
            labels=tuple(json.loads(meta[f"{META_PREFIX}labels"])),
            output=meta.get(f"{META_PREFIX}output", "sentence_embedding"),
        )


def is_text_metadata(meta: dict[str, str]) -> bool:
    return f"{META_PREFIX}tokenizer" in meta


class TextTokenizer:
    """tokenizer.json → token ids, with the spec's truncation; the file's own padding and truncation are replaced."""

    def __init__(self, tokenizer_json: str, max_length: int, truncation: str) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.no_padding()
        self.max_length = max_length
        self.truncation = truncation
        if truncation == "truncate":
            self._tok.enable_truncation(max_length)
        else:
            self._tok.no_truncation()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text; over-long texts are cut, or refused with 413, per the settings."""
        # One by one: encode_batch fans out to a thread pool of every core, which fights the model's
        # threads for the CPU; a text costs tens of microseconds either way.
        encodings = [self._tok.encode(t) for t in texts]
        ids = [e.ids for e in encodings]
        if self.truncation == "refuse":
            for i, row in enumerate(ids):
                if len(row) > self.max_length:
                    raise TextError(
                        f"text {i} has {len(row)} tokens, more than max_length {self.max_length}; "
                        "shorten it or split it into several texts",
                        status=413,
                    )
        return ids


def check_texts(values: Any, where: str = "instances") -> list[str]:
    """A list of non-empty strings (str, or UTF-8 bytes); anything else is a 400 naming the item."""
    items = list(values.reshape(-1)) if isinstance(values, np.ndarray) else list(values)
    texts: list[str] = []
    for i, value in enumerate(items):
        if isinstance(value, (bytes, bytearray, memoryview)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TextError(f"{where}[{i}] is not valid UTF-8 (byte {exc.start}); send UTF-8 text") from None
        if not isinstance(value, str):
            raise TextError(f"{where}[{i}] is {_kind(value)}, not a string; send text")
        if not value.strip():
            raise TextError(f"{where}[{i}] is an empty string; send some text")
        texts.append(value)
    if not texts:
        raise TextError(f"{where} holds no texts; send at least one")
    return texts


def _length_bucket(tokens: int) -> int:
    """Texts run together when their lengths share a bucket: 8-token steps up to 64, 16 to 128, then 32."""
    step = BUCKET if tokens <= 64 else 2 * BUCKET if tokens <= 128 else 4 * BUCKET
    return -(-tokens // step) * step


def pad(ids: list[list[int]], bucket: int = BUCKET, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64, padded with 0 to the longest row rounded up to `bucket`."""
    longest = max(len(r) for r in ids)
    width = -(-longest // bucket) * bucket
    if limit is not None:
        width = max(min(width, limit), longest)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return input_ids, mask


class TextModel:
    """An ONNX text artifact: texts in, L2-normalised embeddings or class probabilities out.

    `predict` takes a 1-D array (or list) of strings, the batcher's concatenated samples."""

    platform = "onnxruntime_onnx"

    def __init__(self, path: str | os.PathLike[str], num_threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model artifact {self.path} does not exist")
        self.num_threads = num_threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        meta = dict(self._session.get_modelmeta().custom_metadata_map)
        if not is_text_metadata(meta):
            raise ValueError(f"model artifact {self.path} is not a text model (no tokenizer in its metadata)")
        self.settings = TextSettings.from_metadata(meta)
        self.tokenizer = TextTokenizer(
            meta[f"{META_PREFIX}tokenizer"], self.settings.max_length, self.settings.truncation
        )
        names = [i.name for i in self._session.get_inputs()]
        if sorted(names) != sorted(INPUTS):
            raise ValueError(
                f"model artifact {self.path}: a text model takes {', '.join(INPUTS)}, not {', '.join(names)}"
            )
        self._output_name = self._session.get_outputs()[0].name
        self._width = (
            int(self._session.get_outputs()[0].shape[-1])
            if isinstance(self._session.get_outputs()[0].shape[-1], int)
            else -1
        )

    # the interface the server and the batcher use ----------------------------------------------
    @property
    def feeds(self) -> tuple[Feed, ...]:
        """One text per sample (the served input's name is free: ``serving.feeds.pair``)."""
        return (Feed("text", (), np.dtype(object)),)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self._width,)

    @property
    def output_dtype(self) -> np.dtype[Any]:
        return np.dtype(np.float32)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.settings.labels

    def predict(self, batch: Any) -> np.ndarray:
        return self.run_ids(self.tokenizer.encode(check_texts(batch)))

    def run_ids(self, ids: list[list[int]]) -> np.ndarray:
        """Run texts grouped by length bucket (`_length_bucket`): each group pads to its own longest text,
        so a batch that joins short and long requests does not pad the short ones to the long ones' length."""
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            groups.setdefault(_length_bucket(len(row)), []).append(i)
        if len(groups) == 1:
            return self.run_padded(*pad(ids))
        out: np.ndarray | None = None
        for members in groups.values():
            result = self.run_padded(*pad([ids[i] for i in members]))
            if out is None:
                out = np.empty((len(ids), *result.shape[1:]), dtype=np.float32)
            out[members] = result
        assert out is not None
        return out

    def run_padded(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._session.run(
            [self._output_name], {"input_ids": input_ids, "attention_mask": attention_mask}
        )[0]
        return out.astype(np.float32, copy=False)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        result = np.zeros(0)
        for size in batch_sizes:
            result = self.predict(np.array(["warm up"] * size, dtype=object))
        return result


# --- request decoding: both protocols hand text inputs here ------------------------------------------


def text_batch(data: Any, field: str) -> np.ndarray:
    """TF Serving rows/columns for a string input: a list of strings (or [string] rows) → object array."""
    if not isinstance(data, list) or not data:
        raise TextError(
            f"{field}: must be a non-empty array of texts, got {_kind(data) if data != [] else 'an empty array'}"
        )
    rows = [row[0] if isinstance(row, list) and len(row) == 1 else row for row in data]
    return np.array(check_texts(rows, field), dtype=object)


def text_tensor(name: Any, shape: Any, datatype: Any, data: Any, raw: Any, spec_name: str, where: str) -> np.ndarray:
    """A V2 BYTES tensor of shape [n] or [n, 1] → object array of texts: JSON strings (or gRPC's
    bytes elements) in ``data``, or length-prefixed elements in ``raw`` (binary extension, gRPC)."""
    from serving import v2_binary
    from serving.bytes_tensors import TensorDataError

    if name != spec_name:
        raise TextError(f'{where}.name: this model\'s input is "{spec_name}", got {show(name)}')
    if not (
        isinstance(shape, list)
        and len(shape) in (1, 2)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and 1 <= shape[0] < 2**63
        and shape[1:] in ([], [1])
    ):
        raise TextError(
            f'{where}.shape: input "{spec_name}" takes shape [n] or [n, 1] (one text per sample), got {show(shape)}'
        )
    if datatype != "BYTES":
        raise TextError(f'{where}.datatype: input "{spec_name}" takes text as BYTES, got {show(datatype)}')
    count = shape[0]
    if raw is not None:
        try:
            values = v2_binary.tensor_from_bytes(raw, "BYTES", [count], where)
        except TensorDataError as exc:
            raise TextError(str(exc)) from None
        return np.array(check_texts(list(values), f"{where}.data"), dtype=object)
    if not isinstance(data, list):
        raise TextError(f'{where}.data: must be an array of strings for input "{spec_name}", got {_kind(data)}')
    flat = [row[0] if isinstance(row, list) and len(row) == 1 else row for row in data]
    if len(flat) != count:
        raise TextError(f"{where}.data: shape {shape} needs {count} texts, got {len(flat)}")
    return np.array(check_texts(flat, f"{where}.data"), dtype=object)


def labelled(outputs: np.ndarray, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Class probabilities as rows naming the most likely label and each label's probability."""
    return [
        {"label": labels[int(np.argmax(row))], "probabilities": {k: float(v) for k, v in zip(labels, row)}}
        for row in outputs
    ]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
