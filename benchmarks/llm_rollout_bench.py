"""A model change rolled out under 8 streaming clients, with the real Pulumi engine and Docker Engine.

    PYTHONPATH=. .venv/bin/python benchmarks/llm_rollout_bench.py [--clients 8] [--max-tokens 128]
        [--temperature 0] [--baseline-s 30] [--back] [--json benchmarks/results/llm_rollout.json]

Deploys a sandbox copy of `stacks/smollm` around the tiny open-ended GGUF (`modelprep.families.llm.tiny`,
`open_ended=True`: the special tokens' logits are 0 among logits a few units either side, so greedy
decoding never picks end-of-generation, every answer runs to max_tokens and one that ends early is one the
rollout cut), `serving.max_sequences` = the client count. Greedy (`--temperature 0`, the default) on
purpose: sampled at temperature 1, the tiny model does end about 0.6% of 128-token answers with
end-of-generation (10 of 1,712 on 2026-12-07, as many before the rollout as during it), which would
count as truncated without the rollout having cut anything. Then `--clients`
threads each stream `/v1/chat/completions` through the proxy with the official `openai` client, one
request after another; after `--baseline-s` seconds `pulumi up` rolls the variant `gguf-source` →
`gguf-q8_0` (and back with `--back`), the clients stream on `--baseline-s` after it, then stop.

Every stream counts: finish_reason "length" with non-empty text is ok; an exception, another finish
reason (None, "stop") or empty text is failed, with its message. Reported: streams ok / failed, each
`pulumi up`'s seconds, time to first token (request sent → first text) p50/p99 for streams started
before the rollout and during it, the replica's memory limit and the server's drain and Docker's stop
grace, and the load average around the run. Destroys the stack at the end. Exit 1 if any stream failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Stream:
    started: float  # monotonic, request sent
    wall: float  # time.time() when sent: to place Docker's events
    ttft_s: float | None  # to the first non-empty text
    seconds: float
    chunks: int
    chars: int
    finish: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.finish == "length" and self.chars > 0


def stream_once(api: Any, max_tokens: int, temperature: float) -> Stream:
    started, wall = time.monotonic(), time.time()
    ttft, chunks, chars, finish, error = None, 0, 0, None, None
    try:
        for chunk in api.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "tell me a long story"}],
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
        ):
            if chunk.choices:
                text = chunk.choices[0].delta.content or ""
                if text and ttft is None:
                    ttft = time.monotonic() - started
                chunks += 1
                chars += len(text)
                finish = chunk.choices[0].finish_reason or finish
    except Exception as exc:  # any failure the client sees counts
        error = f"{type(exc).__name__}: {exc}"[:300]
    return Stream(started, wall, ttft, time.monotonic() - started, chunks, chars, finish, error)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 3)


def ttft_summary(streams: list[Stream]) -> dict[str, Any]:
    ttfts = [s.ttft_s for s in streams if s.ttft_s is not None]
    return {
        "streams": len(streams),
        "ok": sum(s.ok for s in streams),
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p99_s": percentile(ttfts, 99),
        "stream_p50_s": percentile([s.seconds for s in streams], 50),
    }


def retirements(owner: str, since: float, until: float) -> list[float]:
    """When (time.time()) Docker sent SIGTERM to one of this stack's model replicas between the two times:
    the moments an old replica began to drain."""
    import docker

    from harness.sandbox import owned

    found = []
    events = docker.from_env().events(
        since=int(since), until=int(until) + 1, decode=True, filters={"type": "container", "event": "kill"}
    )
    for event in events:
        labels = event.get("Actor", {}).get("Attributes", {})
        if labels.get("org.modelstack.role") == "model" and owned(labels, owner) and labels.get("signal") == "15":
            moment = event.get("timeNano", event.get("time", 0) * 1e9) / 1e9
            if since <= moment <= until:
                found.append(moment)
    return sorted(found)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (see the module's text)")
    parser.add_argument("--baseline-s", type=float, default=30.0, help="streaming before and after the rollouts")
    parser.add_argument("--back", action="store_true", help="roll back to gguf-source too")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from openai import OpenAI

    from harness.sandbox import REPO, Sandbox
    from harness.specs import chat_spec
    from iac.deploy.needs import model_needs
    from iac.deploy.targets.docker.replicas import DRAIN_S
    from iac.deploy.targets.docker.settings import stop_grace_s
    from iac.spec.load import load_resolved
    from modelprep.examples.smollm import TEXT
    from modelprep.families.llm import tiny
    from modelprep.request import prep_key, prep_request

    root = Path(tempfile.mkdtemp(prefix="modelstack-llm-rollout-bench-"))
    os.environ.setdefault("MODELSTACK_CACHE", str(root / "cache"))
    example = root / "example"
    tiny.build(example / "model" / "tiny.gguf", open_ended=True)
    (example / "data").mkdir()
    shutil.copyfile(TEXT, example / "data" / "evaluation.txt")
    spec_file = root / "chat.yaml"
    spec_file.write_text(chat_spec(sequences=args.clients))
    (root / "stack").mkdir()
    stack = Sandbox(root / "stack", example, stack_files=REPO / "stacks" / "smollm", spec=spec_file)

    load_start = loadavg()
    streams: list[Stream] = []
    lock = threading.Lock()
    stop = threading.Event()
    ups: list[dict[str, Any]] = []
    replica: dict[str, Any] = {}

    def client() -> None:
        api = OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        while not stop.is_set():
            result = stream_once(api, args.max_tokens, args.temperature)
            with lock:
                streams.append(result)

    started = time.monotonic()
    stack.pulumi("stack", "init", stack.name)
    try:
        stack.pulumi("up", "--yes", "--skip-preview")
        first_up_s = time.monotonic() - started
        resolved = load_resolved(stack.dir / "model.yaml")
        needs = model_needs(resolved, prep_key(prep_request(resolved)))
        [container] = stack.containers("model")
        replica = {
            "memory_limit_bytes": container.attrs["HostConfig"]["Memory"],
            "memory_limit_mib": round(container.attrs["HostConfig"]["Memory"] / 2**20, 1),
            "memory_detail": needs.memory_detail if needs else None,
            "drain_s": round(needs.drain_s, 1) if needs else None,
            "stop_grace_s": stop_grace_s(needs),  # the retiring replica's `docker stop` timeout
        }
        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        time.sleep(args.baseline_s)
        flips = [("gguf-source", "gguf-q8_0")] + ([("gguf-q8_0", "gguf-source")] if args.back else [])
        for old, new in flips:
            stack.edit_spec(f"variants: [{old}]", f"variants: [{new}]")
            load_before = loadavg()
            t0, wall0 = time.monotonic(), time.time()
            stack.pulumi("up", "--yes", "--skip-preview")
            t1, wall1 = time.monotonic(), time.time()
            ups.append(
                {
                    "from": old,
                    "to": new,
                    "start": t0,
                    "end": t1,
                    # read now: the daemon keeps only its last few hundred events
                    "sigterms": retirements(stack.owner, wall0, wall1),
                    "seconds": round(t1 - t0, 1),
                    "served_variant": stack.metadata()["variant"],
                    "replicas_after": len(stack.containers("model")),
                    "load_before": load_before,
                    "load_after": loadavg(),
                }
            )
        time.sleep(args.baseline_s)
        stop.set()
        for thread in threads:
            thread.join(args.max_tokens * 2 + 60)
    finally:
        stop.set()
        stack.pulumi("destroy", "--yes")
    load_end = loadavg()

    for up in ups:
        # Streams in flight through the proxy when each old replica got SIGTERM; and of them, those sent
        # more than DRAIN_S before it, so before the proxy switched: the old replica's own, which its
        # drain had to finish (a lower bound on them).
        up["sigterm_in_flight"] = [sum(s.wall <= t <= s.wall + s.seconds for s in streams) for t in up["sigterms"]]
        # Each stream in flight in the 10 s before a SIGTERM: (sent, ended) in seconds from it.
        up["streams_around_sigterm"] = [
            [
                (round(s.wall - t, 2), round(s.wall + s.seconds - t, 2), s.ok)
                for s in streams
                if s.wall + s.seconds > t - 10 and s.wall < t + 1
            ]
            for t in up["sigterms"]
        ]
        up["sigterm_old_replica_streams"] = [
            sum(s.wall < t - DRAIN_S and s.wall + s.seconds > t for s in streams) for t in up["sigterms"]
        ]
    rollout_start, rollout_end = ups[0]["start"], ups[-1]["end"]
    # A stream belongs to the rollout when it was in flight at any moment of a `pulumi up`.
    before = [s for s in streams if s.started + s.seconds < rollout_start]
    during = [s for s in streams if s.started <= rollout_end and s.started + s.seconds >= rollout_start]
    after = [s for s in streams if s.started > rollout_end]
    failed = [s for s in streams if not s.ok]
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": "tiny open-ended Llama GGUF (modelprep.families.llm.tiny, open_ended=True)",
        "clients": args.clients,
        "max_sequences": args.clients,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "first_up_s": round(first_up_s, 1),
        "ups": [{k: v for k, v in up.items() if k not in ("start", "end", "sigterms")} for up in ups],
        "streams_ok": len(streams) - len(failed),
        "streams_failed": len(failed),
        "failures": [
            {k: v for k, v in asdict(s).items() if k != "wall"} | {"started": round(s.started - rollout_start, 2)}
            for s in failed[:20]
        ],
        "before_rollout": ttft_summary(before),
        "during_rollout": ttft_summary(during),
        "after_rollout": ttft_summary(after),
        "replica": replica,
        "load_average": {"start": load_start, "end": load_end},
        "cpus": os.cpu_count(),
    }
    print(json.dumps(summary, indent=2))
    print("\n| phase | streams | ok | TTFT p50 | TTFT p99 | stream p50 |\n|---|---|---|---|---|---|")
    for phase in ("before_rollout", "during_rollout", "after_rollout"):
        p = summary[phase]
        print(
            f"| {phase.replace('_', ' ')} | {p['streams']} | {p['ok']} | {p['ttft_p50_s']} s | "
            f"{p['ttft_p99_s']} s | {p['stream_p50_s']} s |"
        )
    print(f"\nstreams: {summary['streams_ok']} ok, {summary['streams_failed']} failed")
    for s in failed[:10]:
        print(f"  failed: finish={s.finish!r} chars={s.chars} error={s.error}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
