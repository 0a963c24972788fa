"""What a replica of the prepped model needs, per its family (`modelprep.family.ServingNeeds`), for both
targets: the memory limit it serves within, how long its requests may run (the drain on a rollout, the
proxy's read timeout). A family that states nothing leaves the spec's limits and the defaults."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iac.spec.models import ResolvedSpec
    from modelprep.family import ServingNeeds

# nginx's default wait for an answer: enough for a prediction. A family that states needs has long
# requests (a whole stream, a queue of transcriptions): the proxy then waits as long as the longest drain
# any family states (each bounds its `drain_s` to this), whatever this version's own figure. A figure
# from the version being deployed would follow a candidate even when it is rolled back, and change the
# proxy's config (rolling its pods) on every model change.
DEFAULT_READ_TIMEOUT_S = 60
LONG_READ_TIMEOUT_S = 600


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
    """How long the proxy waits for a replica's answer: nginx's default, or for a family with long
    requests the longest drain a family states (see above)."""
    if needs is None:
        return DEFAULT_READ_TIMEOUT_S
    return max(LONG_READ_TIMEOUT_S, math.ceil(needs.drain_s))
