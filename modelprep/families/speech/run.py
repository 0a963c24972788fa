"""The speech family through the shared gate and objective, before the one prep loop drives every family.

``run`` measures the baseline and the candidates with the family's session, gates them with
``modelprep.select.gated`` (WER: lower is better, ``max_accuracy_drop`` an absolute increase over
``ct2-float32``) and lets ``modelprep.select.choose`` pick by the objective. When the loop in
``modelprep.prep`` takes families (branch prep), it calls the same session and this module goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelprep.families.speech import BASELINE, CATALOGUE, WER, SpeechSession, settings_of
from modelprep.report import Measure


@dataclass(frozen=True)
class SpeechChoice:
    baseline: Measure
    variants: list[Measure]  # gated, the winner marked chosen
    chosen: str | None
    why: str

    @property
    def settings(self) -> dict[str, object] | None:
        """serving.json ``metadata.speech`` for the chosen variant (None when none passed)."""
        return None if self.chosen is None else settings_of(CATALOGUE[self.chosen])


def run(
    session: SpeechSession, variants: Sequence[str], max_accuracy_drop: float, objective: str = "smallest"
) -> SpeechChoice:
    from modelprep.select import choose, gated

    baselines = session.baselines()
    baseline = baselines.measures[0]
    rows = [
        baseline if name == BASELINE else session.measure(CATALOGUE[name], b"", {}, None).measure for name in variants
    ]
    rows = gated(rows, baseline.accuracy, WER, max_accuracy_drop)
    rows, chosen, why = choose(rows, objective, max_accuracy_drop)
    return SpeechChoice(baseline, rows, chosen, why)
