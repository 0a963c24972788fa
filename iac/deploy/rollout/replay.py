"""Live requests of a rollout window, replayed to both versions for the agreement check.

During a window the proxy logs the bodies of POST requests to its tmpfs (`REPLAY_LOG`, JSON lines of
`{"uri", "body"}`); `TAKE_COMMAND`, run in the proxy (a Docker exec: `take`; a pod exec on Kubernetes),
prints and empties that file, `entries_of` reads it. `replay` sends each body, as the client sent
it, to one replica of the old version and one of the new, through the public JSON API (TF Serving V1
`predictions`, Open Inference V2 `outputs`), and compares the answers (`analysis.compare`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from iac.build.proxy_config import REPLAY_LOG
from iac.deploy.rollout.analysis import Agreement, AgreementKind, compare

TIMEOUT_S = 5.0  # a replayed request slower than this counts as a failed (timed out) answer


TAKE_COMMAND = ["sh", "-c", f"cat {REPLAY_LOG} 2>/dev/null; : > {REPLAY_LOG}"]
CLEAR_COMMAND = ["sh", "-c", f": > {REPLAY_LOG}"]
Send = Callable[[str, str, str], "list[Any] | None"]  # (replica, uri, body) -> per-instance outputs or None


def take(proxy: Any, limit: int) -> list[dict[str, str]]:
    """The last `limit` logged requests of the window (a Docker proxy container), and the log emptied."""
    # `: >` truncates in place: nginx keeps the file open (O_APPEND) and goes on writing at its start.
    result = proxy.exec_run(TAKE_COMMAND, user="33:33")
    return entries_of(result.output.decode(errors="replace"), limit)


def entries_of(log: str, limit: int) -> list[dict[str, str]]:
    """The prediction requests among the last `limit` lines of a replay log."""
    entries = []
    for line in log.splitlines()[-limit:]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        uri = entry.get("uri", "")
        if entry.get("body") and (":predict" in uri or uri.endswith("/infer")):
            entries.append(entry)
    return entries


def clear(proxy: Any) -> None:
    proxy.exec_run(CLEAR_COMMAND, user="33:33")


def replay(
    entries: Sequence[dict[str, str]],
    stable: Sequence[str],
    candidate: Sequence[str],
    port: int,
    kind: AgreementKind,
    api_key: str | None = None,
    send: Send | None = None,
) -> tuple[Agreement, int]:
    """(agreement, candidate failures) over `entries`, alternating over the replicas: their addresses
    (sent to `http://<address>:<port>`), or whatever names `send` takes (e.g. pods, through the API server)."""

    def direct(replica: str, uri: str, body: str) -> list[Any] | None:
        return _predict(f"http://{replica}:{port}{uri}", body, api_key)

    post = send or direct
    figures: list[float] = []
    failures = 0
    for i, entry in enumerate(entries):
        old = post(stable[i % len(stable)], entry["uri"], entry["body"])
        if old is None:
            continue  # the old version could not answer it either: nothing to compare
        new = post(candidate[i % len(candidate)], entry["uri"], entry["body"])
        if new is None or len(new) != len(old):
            failures += 1
            figures.extend([0.0 if kind != "mae" else float("inf")] * len(old))
            continue
        figures.extend(compare(kind, old, new))
    return Agreement.of(kind, figures), failures


def _predict(url: str, body: str, api_key: str | None) -> list[Any] | None:
    """The per-instance outputs of one answer, or None when it failed or timed out."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=body.encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError, TimeoutError):
        return None
    return instances(answer)


def instances(answer: dict[str, Any]) -> list[Any] | None:
    """V1 `predictions` (one entry per instance), or the first V2 output split along its first dimension."""
    if "predictions" in answer:
        predictions = answer["predictions"]
        return predictions if isinstance(predictions, list) else None
    outputs = answer.get("outputs") or []
    if not outputs:
        return None
    first = outputs[0]
    data, shape = first.get("data") or [], first.get("shape") or []
    if not shape:
        return None
    per = len(data) // max(1, int(shape[0]))
    return [data[i * per : (i + 1) * per] for i in range(int(shape[0]))]
