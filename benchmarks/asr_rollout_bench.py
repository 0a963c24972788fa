"""A speech model change rolled out under load, on Docker with the real Pulumi engine (issue #21).

    PYTHONPATH=. .venv/bin/python -m benchmarks.asr_rollout_bench [--replicas 2] [--before 60] [--after 20]
        [--json benchmarks/results/asr_rollout.json]

Deploys a sandbox copy of stacks/whisper (`harness.sandbox.Sandbox`: its own state, stack name and
port) with the e2e test's cheap spec (Whisper tiny.en, 3 synthetic evaluation clips for prep, one
variant) at `--replicas` replicas of 1 CPU each. Then 4 client threads, each with the official
`openai` client (`client.audio.transcriptions.create`, default response format, `max_retries=0` so
that no failure is retried away), upload evaluation clips as WAV through the proxy without pause:
`--before` seconds, then `pulumi up` of a model change (variant `ct2-int8` -> `ct2-float32`, whose
prep is run first, outside the timed `up`, as after `modelstack prep`), then `--after` seconds.

Every request counts: an answer with status 200 and non-empty text is ok, anything else failed (its
status or exception and message kept). Latency p50/p99 of the requests that ended before the `up`,
that overlapped it, and that started after it. The old replicas' logs are followed while they live
(their `stopped` line says whether their drain finished), and the proxy's log from the `up` on is kept.
Destroys the stack at the end. Exit 1 when a request failed or the new variant is not served.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 4
OLD, NEW = "ct2-int8", "ct2-float32"


@dataclass
class Request:
    client: int
    clip: int
    started: float  # monotonic seconds
    ended: float
    ok: bool
    status: int | None  # HTTP status; None when no answer came (connection error, timeout)
    detail: str  # the text for an ok answer, else what went wrong

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Clients:
    """`CLIENTS` threads uploading clips in turn with the `openai` client until `stop()`; every request kept."""

    def __init__(self, base_url: str, clips: list[bytes]) -> None:
        self.base_url, self.clips = base_url, clips
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """No new requests; the ones in flight finish (and count)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def client(self, index: int) -> None:
        import openai

        client = openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, timeout=600)
        turn = index
        while not self.stopping.is_set():
            clip = turn % len(self.clips)
            turn += CLIENTS
            started = time.monotonic()
            try:
                answer = client.audio.transcriptions.create(
                    model="whisper", file=(f"clip{clip}.wav", self.clips[clip], "audio/wav")
                )
                text = (answer.text or "").strip()
                request = Request(index, clip, started, time.monotonic(), bool(text), 200, text or "empty text")
            except openai.APIStatusError as exc:
                request = Request(index, clip, started, time.monotonic(), False, exc.status_code, str(exc)[:500])
            except openai.APIError as exc:  # no answer: connection refused or reset, timeout
                cause = f" ({exc.__cause__!r})" if exc.__cause__ else ""
                request = Request(
                    index, clip, started, time.monotonic(), False, None, f"{type(exc).__name__}: {exc}{cause}"[:500]
                )
            with self.lock:
                self.requests.append(request)


class LoadSampler:
    """The host's 1-minute load average every 5 s while the benchmark runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            self.samples.append(round(os.getloadavg()[0], 2))
            if self.stopping.wait(5):
                return

    def stop(self) -> dict[str, float]:
        self.stopping.set()
        self.thread.join()
        return {"min": min(self.samples), "median": float(np.median(self.samples)), "max": max(self.samples)}


class LogFollower:
    """Follows the logs of containers (the old replicas) into one file while they live."""

    def __init__(self, containers: list[Any], path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.lock = threading.Lock()
        for container in containers:
            threading.Thread(target=self.follow, args=(container,), daemon=True).start()

    def follow(self, container: Any) -> None:
        try:
            for raw in container.logs(stream=True, follow=True, since=int(time.time())):
                with self.lock:
                    self.lines.append(f"{container.name}: {raw.decode(errors='replace').rstrip()}")
        except Exception as exc:  # the container removed under the stream
            with self.lock:
                self.lines.append(f"{container.name}: log stream ended ({type(exc).__name__})")

    def save(self) -> list[str]:
        with self.lock:
            self.path.write_text("\n".join(self.lines) + "\n")
            return list(self.lines)


def latency(requests: list[Request]) -> dict[str, Any]:
    seconds = [r.seconds for r in requests]
    if not seconds:
        return {"requests": 0}
    return {
        "requests": len(seconds),
        "ok": sum(r.ok for r in requests),
        "p50_s": round(float(np.percentile(seconds, 50)), 2),
        "p99_s": round(float(np.percentile(seconds, 99)), 2),
        "max_s": round(max(seconds), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--before", type=float, default=60.0, help="seconds of load before the up")
    parser.add_argument("--after", type=float, default=20.0, help="seconds of load after the up")
    parser.add_argument("--upload-clips", type=int, default=8, help="evaluation clips the clients upload")
    parser.add_argument("--join", type=int, default=1, help="consecutive clips per upload (1 s pauses between)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from harness.sandbox import Sandbox, healers, leftovers
    from harness.specs import speech_spec
    from iac.spec.load import load_resolved
    from modelprep.examples.minilm import link_tree
    from modelprep.examples.whisper import whisper_dir
    from modelprep.families.speech import corpus
    from modelprep.prep import prep
    from modelprep.request import prep_request

    began = time.time()
    sampler = LoadSampler()
    root = Path(tempfile.mkdtemp(prefix="modelstack-asr-rollout-"))
    example = root / "example"
    link_tree(whisper_dir(), example / "model")
    corpus.save(corpus.make(3), example / "data" / "evaluation.npz")  # what prep measures, as the e2e test's
    uploads = corpus.make(args.upload_clips * args.join, seed=1)
    pause = np.zeros(corpus.SAMPLE_RATE, dtype=np.float32)
    audio = [
        np.concatenate([part for k in range(args.join) for part in (uploads.clip(i * args.join + k), pause)][:-1])
        for i in range(args.upload_clips)
    ]
    clips = [corpus.wav_bytes(samples) for samples in audio]
    spec = root / "spec.yaml"
    spec.write_text(speech_spec(OLD, args.replicas))
    stack = Sandbox(root / "sandbox", example, stack_files=REPO / "stacks" / "whisper", spec=spec)
    timings: dict[str, float] = {}
    stack.pulumi("stack", "init", stack.name)
    result: dict[str, Any] = {}
    try:
        started = time.monotonic()
        stack.pulumi("up", "--yes", "--skip-preview")
        timings["first_up_s"] = time.monotonic() - started
        assert stack.metadata()["variant"] == OLD, stack.metadata()

        # The change, prepped first (as `modelstack prep` would): the timed up is the rollout itself.
        stack.edit_spec(f"variants: [{OLD}]", f"variants: [{NEW}]")
        started = time.monotonic()
        prepped = prep(prep_request(load_resolved(stack.dir / "model.yaml")))
        timings["prep_new_variant_s"] = time.monotonic() - started
        assert prepped.report.chosen.name == NEW, prepped.report.chosen.name

        olds = stack.containers("model")
        proxy = stack.containers("proxy")[0]
        follower = LogFollower(olds, root / "old-replicas.log")
        with Clients(stack.base_url, clips) as clients:
            time.sleep(args.before)
            up_started = time.monotonic()
            up_wall = time.time()
            run = stack.run("up", "--yes", "--skip-preview", check=False, timeout=1200)
            up_ended = time.monotonic()
            time.sleep(args.after)
        timings["rollout_up_s"] = up_ended - up_started
        served = stack.metadata()
        old_logs = follower.save()
        proxy_log = proxy.logs(since=int(up_wall) - 1).decode(errors="replace").strip().splitlines()
        # Every upload over client_body_buffer_size (64k) is buffered to the proxy's tmpfs with a warning.
        buffered = [line for line in proxy_log if "buffered to a temporary file" in line]
        proxy_log = [line for line in proxy_log if line not in buffered]
        requests = sorted(clients.requests, key=lambda r: r.started)

        before = [r for r in requests if r.ended < up_started]
        during = [r for r in requests if r.started <= up_ended and r.ended >= up_started]
        after = [r for r in requests if r.started > up_ended]
        failed = [r for r in requests if not r.ok]
        result = {
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(began)),
            "command": "PYTHONPATH=. .venv/bin/python -m benchmarks.asr_rollout_bench "
            f"--replicas {args.replicas} --before {args.before:g} --after {args.after:g}"
            + (f" --join {args.join}" if args.join != 1 else "")
            + (f" --json {args.json}" if args.json else ""),
            "replicas": args.replicas,
            "clients": CLIENTS,
            "change": f"{OLD} -> {NEW}",
            "up_exit_code": run.returncode,
            "served_after": {"variant": served["variant"], "artifact_sha256": served["artifact_sha256"]},
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "requests": len(requests),
            "ok": sum(r.ok for r in requests),
            "failed": len(failed),
            "latency": {"before_up": latency(before), "during_up": latency(during), "after_up": latency(after)},
            "failures": [
                {**asdict(r), "at_s_from_up_start": round(r.ended - up_started, 2), "seconds": round(r.seconds, 2)}
                for r in failed
            ],
            "upload_clips_s": [round(len(samples) / corpus.SAMPLE_RATE, 1) for samples in audio],
            "old_replicas_stopped": [line for line in old_logs if '"stopped"' in line or '"draining"' in line],
            "proxy_log_since_up": proxy_log[-40:],
            "proxy_bodies_buffered_to_tmpfs_since_up": len(buffered),
            "up_output_tail": run.stdout[-1500:] + run.stderr[-1500:],
        }
    finally:
        stack.pulumi("destroy", "--yes")
    left = leftovers(stack.owner)
    result["destroy_left"] = {**left, "healers": healers(stack.owner)}
    result["load_average_1m"] = sampler.stop()
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    print(json.dumps({k: v for k, v in result.items() if k not in ("up_output_tail", "proxy_log_since_up")}, indent=2))
    print("\n| phase | requests | ok | p50 s | p99 s | max s |\n|---|---|---|---|---|---|")
    for phase, figures in result["latency"].items():
        if figures["requests"]:
            print(
                f"| {phase.replace('_', ' ')} | {figures['requests']} | {figures['ok']} | {figures['p50_s']} "
                f"| {figures['p99_s']} | {figures['max_s']} |"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    good = result["failed"] == 0 and result["up_exit_code"] == 0 and result["served_after"]["variant"] == NEW
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
