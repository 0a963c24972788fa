"""What a replica of the prepped model needs, per its family (`modelprep.family.ServingNeeds`), for both
targets: the memory limit it serves within, how long its requests may run (the drain on a rollout, the
proxy's read timeout). A family that states nothing leaves the spec's limits and the defaults."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iac.spec.models import ResolvedSpec
    from modelprep.family import ServingNeeds

# nginx's default wait for an answer: enough for a prediction; a family's longer requests raise it.
DEFAULT_READ_TIMEOUT_S = 60


def model_needs(spec: ResolvedSpec, model_key: str) -> ServingNeeds | None:
    """What the prepped model (the prep cache's entry for `model_key`) needs, per its family; None when
    the family states nothing or the model is not prepped yet (a preview before the first prep)."""
    from modelprep.cache import REPORT, Cache
    from modelprep.families import serving_needs
    from modelprep.report import PrepReport

    entry = Cache().get(model_key)
    if entry is None:
        return None
    report = PrepReport.model_validate_json((entry / REPORT).read_text())
    return serving_needs(spec, report, entry / report.artifact_file)


def read_timeout_s(needs: ServingNeeds | None) -> int:
    """How long the proxy waits for a replica's answer: the model's longest request (a whole queue of
    transcriptions, a long completion), never below nginx's default."""
    return DEFAULT_READ_TIMEOUT_S if needs is None else max(DEFAULT_READ_TIMEOUT_S, math.ceil(needs.drain_s))
