"""The steps of a canary or shadow rollout, judged window by window: the same on every target.

A target starts the new version beside the old and hands `judged_rollout` its `Versions`: how to route
a step (canary: `weight`% of live requests to the new version, a request-weight split; shadow: `weight`%
copied to it, its answers discarded), how to send everything back to the old version, how to read each
version's counters from its replicas' own `/metrics`, and how to take the window's live requests and
replay them to both. After each step's hold the window is judged (`analysis.judge`): a pass moves on; a
failure, or an inconclusive window the spec does not hold, sends 100% back to the old version at once
and returns the record (the caller removes the new version). Every window's line goes to `rollout.log`
in `log_dir` (what `up` shows as it goes, `progress.py`) and into the record kept as `last_rollout`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from iac.deploy.rollout.analysis import Agreement, AgreementKind, Counters, Thresholds, Verdict, Window, judge

PROGRESS_FILE = "rollout.log"
REPLAY_LIMIT = 400  # live requests replayed per window at most: enough to judge, bounded in time
CHECK_S = 2.0  # how often a window looks at the new version's errors while it holds


class Versions(Protocol):
    """What a target does for the steps; the old version is `stable`, the new one `candidate`."""

    def route(self, strategy: str, weight: int) -> None:
        """`weight`% of requests to the new version (canary) or copied to it (shadow); bodies logged."""
        ...

    def back_to_stable(self) -> None:
        """100% to the old version, nothing copied or logged."""
        ...

    def scrape(self, candidate: bool) -> Counters:
        """The prediction counters of one version, summed over its replicas' `/metrics`."""
        ...

    def clear_log(self) -> None: ...

    def take_log(self, limit: int) -> list[dict[str, str]]:
        """The window's logged live requests (`{"uri", "body"}`), at most the last `limit`; the log emptied."""
        ...

    def replay(self, entries: list[dict[str, str]], kind: AgreementKind) -> tuple[Agreement, int]:
        """(agreement, candidate failures) over `entries` sent to both versions."""
        ...


def judged_rollout(
    plan: dict[str, Any], version: str, metric: str, stable_figure: float, log_dir: str, versions: Versions
) -> dict[str, Any]:
    """Run the steps of `plan` (the spec's `deploy.rollout`); returns the record (`outcome`: promoted,
    rolled back or inconclusive). On anything but promoted everything goes to the old version again."""
    strategy = plan["strategy"]
    limits = Thresholds.of(plan["analysis"], metric, stable_figure)
    record: dict[str, Any] = {
        "strategy": strategy,
        "version": version,
        "started": now(),
        "steps": [],
        "thresholds": asdict(limits),
    }
    progress = progress_log(log_dir, f"{strategy} rollout of version {version}")
    try:
        for number, step in enumerate(plan["steps"], start=1):
            weight = int(step["weight"])
            label = (
                f"step {number}/{len(plan['steps'])} ({weight}% {'copied' if strategy == 'shadow' else 'of requests'})"
            )
            holds = 0
            versions.route(strategy, weight)
            while True:
                verdict = _window(versions, float(step["hold"]), limits, label, progress)
                record["steps"].append(
                    {"step": number, "weight": weight, "outcome": verdict.outcome, **verdict.figures}
                )
                if verdict.outcome == "pass":
                    break
                if (
                    verdict.outcome == "inconclusive"
                    and plan["analysis"]["inconclusive"] == "hold"
                    and holds < int(plan["analysis"]["max_holds"])
                ):
                    holds += 1
                    progress(
                        f"{label}: inconclusive, held for another window ({holds}/{plan['analysis']['max_holds']})"
                    )
                    continue
                versions.back_to_stable()
                line = f"{strategy} rollout of version {version} rolled back at {verdict.line(label)}"
                progress(line)
                return {
                    **record,
                    "outcome": "rolled back" if verdict.outcome == "fail" else "inconclusive",
                    "reason": line,
                    "metric": verdict.metric,
                    "candidate": verdict.candidate,
                    "stable": verdict.stable,
                    "threshold": verdict.threshold,
                    "samples": verdict.samples,
                    "finished": now(),
                }
    except BaseException:
        versions.back_to_stable()  # interrupted or broken: the old version answers everything again
        raise
    progress(f"{strategy} rollout of version {version}: every step passed; promoting")
    return {**record, "outcome": "promoted", "reason": "", "finished": now()}


def _window(
    versions: Versions, hold: float, limits: Thresholds, label: str, progress: Callable[[str], None]
) -> Verdict:
    versions.clear_log()
    before = versions.scrape(False), versions.scrape(True)
    deadline, failing = time.monotonic() + hold, False
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, CHECK_S))
        so_far = versions.scrape(True).since(before[1])
        progress(
            f"{label}: {hold - max(0.0, deadline - time.monotonic()):.0f}/{hold:.0f} s, "
            f"{so_far.requests} requests to the new version, {so_far.errors} errors"
        )
        if so_far.errors >= 5 and so_far.error_rate > limits.max_error_rate_increase:
            failing = True  # failing clients now: judge at once, without waiting out the hold or replaying
            break
    after = versions.scrape(False), versions.scrape(True)
    entries = [] if failing else versions.take_log(REPLAY_LIMIT)
    agreement, failures = versions.replay(entries, limits.kind)
    verdict = judge(Window(after[0].since(before[0]), after[1].since(before[1]), agreement, failures), limits)
    progress(verdict.line(label) + f" [{json.dumps(verdict.figures)}]")
    return verdict


def progress_log(log_dir: str, title: str) -> Callable[[str], None]:
    """A writer of timestamped lines to `log_dir/rollout.log`, the title written first."""
    path = Path(log_dir) / PROGRESS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:  # appended: the program relays what comes after its start (progress.py)
        log.write(f"{now()} {title}\n")

    def say(line: str) -> None:
        with path.open("a") as log:
            log.write(f"{now()} {line}\n")

    return say


def refuse_rolled_back(record: dict[str, Any] | None, version: str) -> None:
    """`pulumi up` fails with the rollback's one line when the version it asked for was rolled back. Raised
    in an output nothing exports: the SDK fails the program with it (a RunError: no traceback) after the
    stack outputs, `last_rollout` among them, are written. A spec set back to the serving version does not
    fail: the record then only tells what happened."""
    import pulumi

    if record and record.get("outcome") != "promoted" and record.get("version") == version:
        raise pulumi.RunError(str(record.get("reason")))


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
