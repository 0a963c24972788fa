"""Content keys of the build stage: what `pulumi preview` compares to tell an image apart."""

from __future__ import annotations

from iac.spec.models import ResolvedSpec
from modelprep.hashing import json_sha256


def context_key(spec: ResolvedSpec, prep_key: str) -> str:
    """Identity of the build context: the artifact's key, what the templates read from the
    spec, and the templates, server code and wheels themselves."""
    from iac.build.render import context_inputs

    s = spec.spec
    return json_sha256(
        {
            "prep": prep_key,
            "name": s.name,
            "inputs": [t.model_dump(mode="json", exclude_none=True) for t in spec.inputs],
            "serving": s.serving.model_dump(mode="json"),
            "base_image": s.deploy.base_image,
            "context": context_inputs(),
        }
    )
