"""What makes a Keras variant beyond the model's bytes: its quantization and its technique's settings."""

from __future__ import annotations

from typing import Any

from iac.spec.models import Optimize
from modelprep.family import Variant

# The spec field that configures each fine-tuning technique.
TECHNIQUES = {"pruned": "pruning", "clustered": "clustering", "qat": "qat"}


def technique_settings(o: Optimize, technique: str) -> dict[str, Any]:
    """The technique's settings with the spec's defaults filled in (the spec's models own them)."""
    from iac.spec.models import Clustering, Pruning, QuantizationAwareTraining

    default = {"pruned": Pruning, "clustered": Clustering, "qat": QuantizationAwareTraining}[technique]()
    given = getattr(o, TECHNIQUES[technique])
    return dict((given or default).model_dump(mode="json"))


def variant_settings(o: Optimize, variant: Variant) -> dict[str, Any]:
    """Part of the variant's content key (the same fields as before the family seam, so cached
    variants stay valid)."""
    settings: dict[str, Any] = {"quantization": variant.quantization, "int8_io": variant.name == "litert-int8-io"}
    if variant.technique in TECHNIQUES:
        settings[TECHNIQUES[variant.technique]] = technique_settings(o, variant.technique)
    return settings
