"""Scale of the Kubernetes target, simulated: the real control plane and Pulumi with its real
pulumi-kubernetes provider, pods on kwok's simulated nodes (no containers run).

    .venv/bin/python -m benchmarks.k8s_scale_bench [--nodes 50] [--replicas 200] [--big 1000] [--json out.json]

Starts a local cluster (harness.k8s.control_plane) with `--nodes` kwok nodes, deploys the
digits spec with `--replicas` pods, then measures:
  - a no-op `pulumi preview`,
  - `pulumi up` of a model change (quantization int8 <-> dynamic), while a watch on the Deployment
    records the fewest available replicas seen (maxUnavailable 0: it must never drop below the count),
  - `pulumi up` scaling to `--big` replicas, and a model change at that size, with the provider
    plugin's peak resident memory and the wall time.
Destroys the stack and stops the cluster at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

NAMESPACE = "bench"
PLACEMENT: dict[str, Any] = {
    "node_selector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}
TINY = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}


class AvailabilityWatch:
    """Watches the Deployment and keeps the fewest available replicas seen while it runs."""

    def __init__(self, api: Any, name: str) -> None:
        self.api, self.name = api, name
        self.lowest: int | None = None
        self.events = 0
        self.started: float | None = None  # the first event of a rollout: fewer updated replicas than wanted
        self.finished: float | None = None  # the last event where every replica is updated and available
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AvailabilityWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def rollout_s(self) -> float | None:
        """The Deployment's own rollout, as the watch saw it (no prep, build or push in it)."""
        return None if self.started is None or self.finished is None else round(self.finished - self.started, 1)

    def _run(self) -> None:
        from kubernetes import client, watch

        apps = client.AppsV1Api(self.api)
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    apps.list_namespaced_deployment,
                    NAMESPACE,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=5,
                ):
                    status, wanted = event["object"].status, int(event["object"].spec.replicas or 0)
                    available = int(status.available_replicas or 0)
                    self.events += 1
                    self.lowest = available if self.lowest is None else min(self.lowest, available)
                    now = time.monotonic()
                    if int(status.updated_replicas or 0) < wanted and self.started is None:
                        self.started = now
                    if self.started is not None and int(status.updated_replicas or 0) == wanted == available:
                        self.finished = now
                    if self._stop.is_set():
                        break
            finally:
                stream.stop()


class PeakMemory:
    """Polls the resident memory of the pulumi-resource-kubernetes processes; keeps the peak (MiB)."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if (proc / "comm").read_text().strip() != "pulumi-resource":  # comm is cut at 15 chars
                        continue
                    cmd = (proc / "cmdline").read_bytes()
                    if b"pulumi-resource-kubernetes" not in cmd:
                        continue
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak_mib = max(self.peak_mib, int(line.split()[1]) / 1024)
                except OSError:
                    continue
            time.sleep(0.2)


def timed(fn: Any) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def flip(stack: Any) -> None:
    optimize = stack.spec()["optimize"]
    stack.write_spec(optimize={**optimize, "quantization": "dynamic" if optimize["quantization"] == "int8" else "int8"})


def wait_available(api: Any, name: str, count: int, timeout: float = 600) -> float:
    from kubernetes import client

    apps = client.AppsV1Api(api)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status = apps.read_namespaced_deployment(name, NAMESPACE).status
        if int(status.available_replicas or 0) >= count and int(status.updated_replicas or 0) >= count:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"{count} replicas not available within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=200)
    parser.add_argument("--big", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from harness.k8s.control_plane import restricted_namespace, start, stop
    from harness.k8s.sandbox import K8sSandbox
    from modelprep.examples.digits import train

    os.environ.setdefault("MODELSTACK_CACHE", str(Path(".cache") / "bench-prep"))
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, load average at start "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "nodes": args.nodes,
        "replicas": args.replicas,
        "big": args.big,
    }
    with tempfile.TemporaryDirectory(prefix="k8s-scale-") as tmp:
        root = Path(tmp)
        example = root / "example"
        example.mkdir()
        train(example)
        started = time.monotonic()
        cluster = start(root / "cluster", kwok_nodes=args.nodes)
        results["cluster_start_s"] = round(time.monotonic() - started, 1)
        try:
            restricted_namespace(cluster, NAMESPACE)
            deploy = {
                "target": "kubernetes",
                "kubeconfig": cluster.kubeconfig,
                "namespace": NAMESPACE,
                "registry": cluster.registry,
                "replicas": args.replicas,
                "resources": TINY,
                "progress_deadline": 900,
                **PLACEMENT,
            }
            stack = K8sSandbox(root / "stack", example, deploy)
            stack.init()
            api = cluster.api()
            results["create_up_s"] = round(timed(stack.up), 1)  # prep, build, push, the Deployment awaited
            results["create_available_after_up_s"] = round(wait_available(api, "digits", args.replicas), 1)
            results["noop_preview_s"] = round(timed(lambda: stack.pulumi("preview", "--suppress-progress")), 1)
            results["noop_up_s"] = round(timed(stack.up), 1)

            flip(stack)
            stack.pulumi("preview", "--suppress-progress")  # not timed: warms nothing the up needs
            with AvailabilityWatch(api, "digits") as watch:
                results["model_change_up_s"] = round(timed(stack.up), 1)
            results["model_change_lowest_available"] = watch.lowest
            results["model_change_rollout_s"] = watch.rollout_s
            results["model_change_watch_events"] = watch.events

            stack.edit_kubernetes(replicas=args.big)
            with PeakMemory() as memory:
                results["scale_to_big_up_s"] = round(timed(stack.up), 1)
            results["scale_to_big_provider_peak_mib"] = round(memory.peak_mib, 1)
            results["big_noop_preview_s"] = round(timed(lambda: stack.pulumi("preview", "--suppress-progress")), 1)
            flip(stack)
            with AvailabilityWatch(api, "digits") as watch, PeakMemory() as memory:
                results["big_model_change_up_s"] = round(timed(stack.up), 1)
            results["big_model_change_lowest_available"] = watch.lowest
            results["big_model_change_rollout_s"] = watch.rollout_s
            results["big_model_change_provider_peak_mib"] = round(memory.peak_mib, 1)
            results["destroy_s"] = round(timed(stack.destroy), 1)
        finally:
            stop(cluster)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = results.get("model_change_lowest_available", 0) >= args.replicas
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
