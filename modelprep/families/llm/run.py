"""A GGUF request through the shared prep loop (`modelprep.prep.prep`: build, measure, gate on
optimize.max_kl via the family's request, choose, report, cache) — the entry the benchmark and the
tests call with a request they made themselves.
"""

from __future__ import annotations

from collections.abc import Callable

from modelprep.cache import Cache
from modelprep.report import PrepReport
from modelprep.request import PrepRequest


def measure_and_choose(
    req: PrepRequest, progress: Callable[[str], None] = print, cache: Cache | None = None
) -> PrepReport:
    """The report of the loop's run (or its cached result) over `req`."""
    from modelprep.prep import prep

    return prep(req, cache, progress).report
