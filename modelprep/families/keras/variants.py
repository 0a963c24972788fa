"""The catalog of variants the keras family can make, and which of them a request tries and may choose.

A variant is a technique (post-training quantization, pruning, clustering, QAT, ONNX export)
plus how its result is stored and served. Names are what users write in `optimize.variants`.
"""

from __future__ import annotations

from modelprep.family import Candidate, Variant

FINE_TUNED = ("pruned", "clustered", "qat")  # techniques that fine-tune (in the tfmot worker)


def _variant(name: str, runtime: str, technique: str, quantization: str, description: str) -> Variant:
    return Variant(
        name,
        runtime,
        technique,
        quantization,
        description,
        artifact_file="model.onnx" if runtime == "onnx" else "model.tflite",
        uses_fine_tuning_data=technique in FINE_TUNED,
    )


CATALOG: dict[str, Variant] = {
    v.name: v
    for v in (
        _variant("litert-float32", "litert", "ptq", "none", "LiteRT, float32 weights and activations (the reference)"),
        _variant("litert-dynamic", "litert", "ptq", "dynamic", "LiteRT, int8 weights, float activations"),
        _variant("litert-float16", "litert", "ptq", "float16", "LiteRT, float16 weights"),
        _variant("litert-int8", "litert", "ptq", "int8", "LiteRT, full integer (calibrated), float I/O"),
        _variant("litert-int8-io", "litert", "ptq", "int8", "LiteRT, full integer with int8 inputs and outputs"),
        _variant(
            "pruned-float32", "litert", "pruned", "none", "magnitude pruning, fine-tuned, stripped; float32 LiteRT"
        ),
        _variant("pruned-int8", "litert", "pruned", "int8", "magnitude pruning, fine-tuned, stripped; then full int8"),
        _variant(
            "clustered-float32",
            "litert",
            "clustered",
            "none",
            "weight clustering, fine-tuned, stripped; float32 LiteRT",
        ),
        _variant(
            "clustered-int8", "litert", "clustered", "int8", "weight clustering, fine-tuned, stripped; then full int8"
        ),
        _variant("qat-int8", "litert", "qat", "int8", "quantization-aware training, then int8 LiteRT"),
        _variant("onnx-float32", "onnx", "onnx", "none", "ONNX (tf2onnx), float32, ONNX Runtime"),
        _variant("onnx-dynamic", "onnx", "onnx", "dynamic", "ONNX Runtime dynamic quantization (int8 weights)"),
        _variant("onnx-static", "onnx", "onnx", "static", "ONNX Runtime static quantization (int8 QDQ, calibrated)"),
    )
}
NAMES = tuple(CATALOG)
POST_TRAINING = ("litert-float32", "litert-dynamic", "litert-float16", "litert-int8")
ONNX = ("onnx-float32", "onnx-dynamic", "onnx-static")
# Runtimes the generated server runs today; a variant of another runtime is chosen only when
# the spec names it in optimize.variants.
DEFAULT_RUNTIMES = ("litert",)
SHORTHAND_VARIANTS = {
    "none": "litert-float32",
    "dynamic": "litert-dynamic",
    "float16": "litert-float16",
    "int8": "litert-int8",
}


def candidates(
    variants: tuple[str, ...] | None,
    quantization: str | None,
    int8_io: bool,
    pruning: bool,
    clustering: bool,
    qat: bool,
    all_variants: bool,
) -> list[Candidate]:
    """What to try, in catalog order.

    - `variants` given: exactly those, all eligible.
    - else `quantization` given (the shorthand): that one LiteRT variant.
    - else: the post-training LiteRT variants, plus int8 I/O / pruning / clustering / QAT when
      the spec configures them, plus the ONNX variants, measured for comparison but chosen
      only when named in `variants` (the server must be built for that runtime).
    `all_variants` adds every technique; eligibility stays as above.
    """
    if variants:
        chosen = set(variants)
        listed = [CATALOG[name] for name in NAMES if name in chosen]
        if all_variants:
            return [
                Candidate(CATALOG[n], n in chosen, "" if n in chosen else "not in optimize.variants") for n in NAMES
            ]
        return [Candidate(v, True) for v in listed]
    if quantization and not all_variants:
        return [Candidate(CATALOG[SHORTHAND_VARIANTS[quantization]], True)]
    names = list(POST_TRAINING)
    if int8_io or all_variants:
        names.append("litert-int8-io")
    if pruning or all_variants:
        names += ["pruned-float32", "pruned-int8"]
    if clustering or all_variants:
        names += ["clustered-float32", "clustered-int8"]
    if qat or all_variants:
        names.append("qat-int8")
    names += list(ONNX)
    shorthand = SHORTHAND_VARIANTS.get(quantization or "")
    out = []
    for name in NAMES:
        if name not in names:
            continue
        variant = CATALOG[name]
        if shorthand and name != shorthand:
            out.append(Candidate(variant, False, f"optimize.quantization is {quantization}"))
        elif variant.runtime not in DEFAULT_RUNTIMES:
            out.append(
                Candidate(variant, False, f"runtime {variant.runtime}: name it in optimize.variants to allow it")
            )
        else:
            out.append(Candidate(variant, True))
    return out
