"""Fixtures of the Kubernetes tests: one local control plane for the session (its tools built on first
use by scripts/k8s_tools.sh), a registry, kwok nodes, a namespace enforcing the restricted Pod Security
Standard, and on demand one real node."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # specs.py beside the tests

NAMESPACE = "models"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the Kubernetes tools before the first test when any selected test needs the cluster: the
    first build takes long (see docs/kubernetes.md) and must not count against a test's timeout."""
    wanted = [item for item in session.items if item.get_closest_marker("k8s")]
    if wanted:
        from harness.k8s.control_plane import ensure_tools

        ensure_tools(real_node=any("real_node" in getattr(item, "fixturenames", ()) for item in wanted))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from harness.k8s.control_plane import restricted_namespace, start, stop

    root = tmp_path_factory.mktemp("k8s")
    cluster = start(root / "cluster", kwok_nodes=2, build=False)  # built at collection (above)
    try:
        restricted_namespace(cluster, NAMESPACE)
        yield cluster
    finally:
        stop(cluster)


@pytest.fixture(scope="session")
def real_node(cluster: object) -> object:
    """One real node (kubelet, cri-dockerd, bridge CNI, kube-proxy) joined to the session's cluster;
    the cluster fixture's stop() takes it down."""
    from harness.k8s.node import start_node

    root = Path(cluster.root)
    cluster.real_node = True
    start_node(cluster, root / "pki", f"https://127.0.0.1:{cluster.api_port}", {})
    cluster.save()
    return cluster
