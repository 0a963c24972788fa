"""The llm family's variants: the GGUF as given, and re-quantizations made by llama.cpp's own quantizer.

`llama_model_quantize` is the function behind llama.cpp's `llama-quantize` tool; with
`allow_requantize` it dequantizes an already quantized source (e.g. Q4_1) and quantizes again, so
every variant comes from the same weights the user brought. Tensors whose rows do not fit a
K-quant's 256-value blocks fall back to a type llama.cpp picks; `tensor_types` reads what it did.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SOURCE = "gguf-source"


@dataclass(frozen=True)
class Quant:
    name: str  # what optimize.variants says
    ftype: str | None  # llama.cpp's LLAMA_FTYPE_MOSTLY_<ftype>; None for the source as given
    description: str


CATALOGUE: dict[str, Quant] = {
    q.name: q
    for q in (
        Quant(SOURCE, None, "the GGUF as given"),
        Quant("gguf-q8_0", "Q8_0", "8-bit blocks of 32 (llama.cpp Q8_0)"),
        Quant("gguf-q6_k", "Q6_K", "6-bit K-quant (llama.cpp Q6_K)"),
        Quant(
            "gguf-q5_k_m", "Q5_K_M", "5-bit K-quant, attention and FFN-down tensors kept at 6 bits (llama.cpp Q5_K_M)"
        ),
        Quant("gguf-q4_k_m", "Q4_K_M", "4-bit K-quant, some tensors at 6 bits (llama.cpp Q4_K_M)"),
        Quant("gguf-q4_0", "Q4_0", "4-bit blocks of 32, one scale each (llama.cpp Q4_0)"),
    )
}
DEFAULT = ("gguf-source", "gguf-q8_0", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q4_0")


def requantize(source: Path, out: Path, quant: Quant, threads: int) -> Path:
    """Write `source` re-quantized to `quant` at `out` with llama.cpp's quantizer."""
    import llama_cpp

    from modelprep.families.llm.evaluate import quiet

    if quant.ftype is None:
        raise ValueError(f"{quant.name} is the source itself; nothing to quantize")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.ftype}")
    params.nthread = threads
    params.allow_requantize = True
    out.parent.mkdir(parents=True, exist_ok=True)
    with quiet():  # one warning line per tensor that falls back; tensor_types reports them instead
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if status != 0 or not out.is_file():
        raise RuntimeError(f"llama.cpp could not quantize {source.name} to {quant.ftype} (status {status})")
    return out


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each ggml type the file holds, e.g. {"Q4_K": 120, "Q6_K": 31, "F32": 61}."""
    from gguf import GGUFReader

    return dict(Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors))
