"""Talking to a deployed service from the host: the one API-key rule, predictions and metadata."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from iac.spec.models import ResolvedSpec


def api_key_headers(spec: ResolvedSpec | None) -> dict[str, str]:
    """The one rule every command follows: the key is read from the variable that
    `serving.api_key_env` names (nothing is sent when the spec names none or it is unset)."""
    key_env = spec.spec.serving.api_key_env if spec is not None else None
    key = os.environ.get(key_env) if key_env else None
    return {"Authorization": f"Bearer {key}"} if key else {}


def get_json(url: str, spec: ResolvedSpec | None, timeout: float = 5.0) -> dict[str, Any] | None:
    """GET a JSON document; None when nothing answers or the answer is not JSON."""
    request = urllib.request.Request(url, headers=api_key_headers(spec))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError, TypeError):
        return None


def post_json(url: str, body: dict[str, Any], spec: ResolvedSpec | None, timeout: float = 10.0) -> dict[str, Any]:
    """POST a JSON body; raises urllib's errors for the caller to explain."""
    headers = {"Content-Type": "application/json", **api_key_headers(spec)}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return dict(json.loads(response.read()))


def served_metadata(base_url: str, spec: ResolvedSpec) -> dict[str, Any] | None:
    """The deployed server's TF Serving metadata document (`metadata` holds the prep report)."""
    document = get_json(f"{base_url}/v1/models/{spec.name}/metadata", spec)
    if document is None or not isinstance(document.get("metadata"), dict):
        return None
    return dict(document["metadata"])


@dataclass(frozen=True)
class Prediction:
    endpoint: str
    predicted: int
    label: int
    confidence: float


def predict_sample(spec: ResolvedSpec, index: int, url: str | None = None) -> Prediction:
    """POST evaluation sample `index` to the service (TF Serving REST) and read back its class."""
    import numpy as np

    from iac.deploy.targets import target_of
    from iac.spec.errors import UserError

    with np.load(spec.evaluation_path) as data:
        x, y = data["x"], data["y"]
    if not 0 <= index < len(x):
        raise UserError.single("--index", "", f"{index} is out of range", f"use 0 to {len(x) - 1}")
    target = url or target_of(spec).endpoint(spec)
    try:
        scores = post_json(target, {"instances": [x[index].tolist()]}, spec)["predictions"][0]
    except urllib.error.HTTPError as exc:
        raise UserError.single(
            target,
            "",
            f"the service answered {exc.code} ({exc.read()[:200]!r})",
            "check serving.api_key_env and that the key's variable is exported",
        ) from None
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        raise UserError.single(
            target, "", f"the service did not answer ({exc})", "run `pulumi up` in the stack first"
        ) from None
    return Prediction(target, int(np.argmax(scores)), int(y[index]), float(max(scores)))
