"""What a GGUF file says about its model: architecture, context length, vocabulary, special tokens,
chat template and how its weights are stored. Read with the `gguf` package (no runtime needed),
so `modelstack validate` can check a spec against the file before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iac.spec.errors import UserError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GgufInfo:
    architecture: str
    name: str
    context_length: int  # what the model was trained at (`<arch>.context_length`)
    vocabulary: int
    bos: str | None
    eos: str | None
    chat_template: str | None
    file_type: str  # e.g. MOSTLY_Q4_1; per-tensor types may differ
    parameters: int
    tensor_bytes: int


def _field(fields: Any, key: str) -> Any:
    f = fields.get(key)
    return None if f is None else f.contents()


def read(path: str | Path, where: str = "model.yaml") -> GgufInfo:
    """The metadata of the GGUF at `path`; a file that is not one is a UserError at `model.path`."""
    from gguf import GGUFReader, LlamaFileType

    p = Path(path)
    with p.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise UserError.single(
            where,
            "model.path",
            f"{p.name} is not a GGUF file (it starts with {magic!r}, not b'GGUF')",
            "point model.path at a .gguf file, e.g. one written by llama.cpp's convert_hf_to_gguf.py",
        )
    try:
        reader = GGUFReader(str(p))
    except (ValueError, OSError) as exc:
        raise UserError.single(
            where, "model.path", f"{p.name} cannot be read as GGUF ({exc})", "point model.path at a complete .gguf file"
        ) from exc
    fields = reader.fields
    arch = str(_field(fields, "general.architecture") or "")
    tokens = fields.get("tokenizer.ggml.tokens")
    vocabulary = len(tokens.data) if tokens is not None else 0
    context = _field(fields, f"{arch}.context_length")
    if not arch or not vocabulary or context is None:
        raise UserError.single(
            where,
            "model.path",
            f"{p.name} has no {'architecture' if not arch else 'tokenizer' if not vocabulary else 'context length'} "
            "in its metadata; a text-generation model needs general.architecture, "
            "tokenizer.ggml.tokens and <architecture>.context_length",
            "convert the model with llama.cpp's convert_hf_to_gguf.py, which writes them",
        )

    def token(key: str) -> str | None:
        index = _field(fields, key)
        if tokens is None or index is None or index >= vocabulary:
            return None
        return str(tokens.contents(int(index)))

    file_type = _field(fields, "general.file_type")
    try:
        type_name = LlamaFileType(int(file_type)).name if file_type is not None else "unknown"
    except ValueError:
        type_name = f"type {file_type}"
    return GgufInfo(
        architecture=arch,
        name=str(_field(fields, "general.name") or p.stem),
        context_length=int(context),
        vocabulary=vocabulary,
        bos=token("tokenizer.ggml.bos_token_id"),
        eos=token("tokenizer.ggml.eos_token_id"),
        chat_template=_field(fields, "tokenizer.chat_template"),
        file_type=type_name,
        parameters=sum(int(t.n_elements) for t in reader.tensors),
        tensor_bytes=sum(int(t.n_bytes) for t in reader.tensors),
    )


@dataclass(frozen=True)
class CacheShape:
    """What one token of one sequence costs in llama.cpp's KV cache: per layer, the keys and values of
    every KV head (grouped-query attention shares them between query heads)."""

    layers: int
    kv_heads: int
    key_length: int  # per head
    value_length: int
    vocabulary: int

    def bytes_per_token(self, element_bytes: int) -> int:
        return self.layers * self.kv_heads * (self.key_length + self.value_length) * element_bytes


def cache_shape(path: str | Path) -> CacheShape:
    """The KV cache's dimensions from a GGUF's metadata (`<arch>.block_count`, `.attention.head_count_kv`,
    `.attention.key_length` / `.value_length`, which default to the embedding width per head)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    arch = str(_field(fields, "general.architecture") or "")

    def number(key: str, default: int | None = None) -> int:
        value = _field(fields, f"{arch}.{key}")
        if value is None and default is None:
            raise ValueError(f"{Path(path).name} has no {arch}.{key} in its metadata")
        return int(value if value is not None else default)

    heads = number("attention.head_count")
    head_dim = number("embedding_length") // heads
    tokens = fields.get("tokenizer.ggml.tokens")
    return CacheShape(
        layers=number("block_count"),
        kv_heads=number("attention.head_count_kv", heads),
        key_length=number("attention.key_length", head_dim),
        value_length=number("attention.value_length", head_dim),
        vocabulary=len(tokens.data) if tokens is not None else 0,
    )
