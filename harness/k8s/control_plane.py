"""A local Kubernetes cluster on loopback for the tests, `make k8s-demo` and the scale benchmark: etcd,
kube-apiserver (TLS, RBAC, PodSecurity), controller-manager, scheduler, kwok's simulated nodes, a real
registry, and optionally one real node (kubelet ▸ cri-dockerd ▸ the running dockerd, a bridge CNI,
kube-proxy). Every binary comes from `scripts/k8s_tools.sh` (.tools/bin).

    python -m harness.k8s.control_plane up DIR [--kwok-nodes N] [--real-node]
    python -m harness.k8s.control_plane down DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from harness.k8s.cluster import (
    BIN,
    KWOK_ANNOTATION,
    NEVER_READY,
    NODE_IP,
    REAL_NODE,
    REPO,
    RESTRICTED,
    SERVICE_CIDR,
    TOOLS,
    LocalCluster,
    kubeconfig,
)
from harness.k8s.node import start_node, stop_node
from harness.processes import free_port, spawn, terminate, wait_for


def ensure_tools(real_node: bool = False) -> None:
    """Build or install what is missing (cached in .tools; a no-op once done). The provider plugin, the
    longest build, goes beside the others rather than after them."""
    steps = ["debian", "etcd", "kwok", "control-plane"]
    if real_node:
        steps += ["cri-dockerd", "pause"]
    env = {**os.environ, "PULUMI_HOME": os.environ.get("PULUMI_HOME", str(TOOLS / "pulumi-home"))}
    script = ["nice", "-n", "10", "bash", str(REPO / "scripts" / "k8s_tools.sh")]
    provider = subprocess.Popen([*script, "provider"], env=env)
    try:
        subprocess.run([*script, *steps], check=True, env=env)
    finally:
        if provider.wait() != 0:
            raise RuntimeError("scripts/k8s_tools.sh provider failed (see its output above)")


# ---------------------------------------------------------------- certificates (openssl)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=modelstack-local-ca",
        cwd=pki,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    sans = (
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:"
        + NODE_IP
        + ",DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    )
    _sign(pki, "apiserver", "/CN=kube-apiserver", sans)
    for name, subject in {
        "admin": "/O=system:masters/CN=modelstack-admin",
        "controller-manager": "/CN=system:kube-controller-manager",
        "scheduler": "/CN=system:kube-scheduler",
        "kwok": "/O=system:masters/CN=kwok",
        "kube-proxy": "/CN=system:kube-proxy",
        "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "node": f"/O=system:nodes/CN=system:node:{REAL_NODE}",
    }.items():
        _sign(pki, name, subject, None)
    _sign(pki, "kubelet-serving", f"/CN={REAL_NODE}", f"subjectAltName=IP:{NODE_IP},IP:127.0.0.1,DNS:{REAL_NODE}")


def _sign(pki: Path, name: str, subject: str, sans: str | None) -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=pki,
    )
    ext = pki / f"{name}.ext"
    ext.write_text((sans + "\n" if sans else "") + "basicConstraints=CA:FALSE\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "30",
        "-extfile",
        str(ext),
        cwd=pki,
    )


def _api_ready(pki: Path, port: int) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=2) as response:
        return response.status == 200


def start(
    root: str | Path,
    *,
    kwok_nodes: int = 1,
    real_node: bool = False,
    build: bool = True,
    registry_port: int | None = None,
) -> LocalCluster:
    """Start the cluster under `root` (made fresh) and return it once every part answers."""
    if build:
        ensure_tools(real_node)
    root = Path(root).resolve()
    if root.exists():
        shutil.rmtree(root)
    for sub in ("logs", "pki", "etcd", "registry"):
        (root / sub).mkdir(parents=True, mode=0o700)
    pki = root / "pki"
    _certificates(pki)
    ports = {name: free_port() for name in ("etcd", "peer", "api", "registry", "kwok")}
    if registry_port:
        ports["registry"] = registry_port
    server = f"https://127.0.0.1:{ports['api']}"
    cluster = LocalCluster(
        str(root),
        str(kubeconfig(root / "admin.kubeconfig", pki, "admin", server)),
        f"127.0.0.1:{ports['registry']}",
        ports["api"],
        real_node=real_node,
    )
    pids = cluster.pids
    try:
        _registry(root, ports["registry"], pids)
        etcd = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['peer']}"
        spawn(
            root,
            "etcd",
            [
                str(BIN / "etcd"),
                "--name",
                "local",
                "--data-dir",
                str(root / "etcd"),
                "--listen-client-urls",
                etcd,
                "--advertise-client-urls",
                etcd,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"local={peer}",
                "--log-level",
                "warn",
                "--quota-backend-bytes",
                str(4 * 1024**3),
            ],
            pids,
        )
        spawn(
            root,
            "kube-apiserver",
            [
                str(BIN / "kube-apiserver"),
                "--etcd-servers",
                etcd,
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['api']}",
                "--endpoint-reconciler-type=none",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--profiling=false",
                "--v=1",
            ],
            pids,
        )
        wait_for("kube-apiserver", lambda: _api_ready(pki, ports["api"]), 120, root, "kube-apiserver")
        cm = kubeconfig(root / "controller-manager.kubeconfig", pki, "controller-manager", server)
        spawn(
            root,
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={cm}",
                f"--authentication-kubeconfig={cm}",
                f"--authorization-kubeconfig={cm}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--secure-port=0",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ],
            pids,
        )
        sched = kubeconfig(root / "scheduler.kubeconfig", pki, "scheduler", server)
        spawn(
            root,
            "kube-scheduler",
            [
                str(BIN / "kube-scheduler"),
                f"--kubeconfig={sched}",
                f"--authentication-kubeconfig={sched}",
                f"--authorization-kubeconfig={sched}",
                "--leader-elect=false",
                "--secure-port=0",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ],
            pids,
        )
        kwok_config = _kwok_stages(root)
        kw = kubeconfig(root / "kwok.kubeconfig", pki, "kwok", server)
        spawn(
            root,
            "kwok",
            [
                str(BIN / "kwok"),
                f"--kubeconfig={kw}",
                f"--config={kwok_config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
            pids,
        )
        core = cluster.core()
        wait_for("the default service account's namespace", lambda: core.read_namespace("default"), 60)
        add_kwok_nodes(cluster, kwok_nodes)
        if real_node:
            start_node(cluster, pki, server, ports)
        cluster.save()
        return cluster
    except BaseException:
        cluster.save()
        stop(cluster)
        raise


def _registry(root: Path, port: int, pids: dict[str, int]) -> None:
    config = root / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(root / "registry")}, "delete": {"enabled": True}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    spawn(root, "registry", ["/usr/bin/docker-registry", "serve", str(config)], pids)
    wait_for(
        "the registry",
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).status == 200,
        30,
        root,
        "registry",
    )


def _kwok_stages(root: Path) -> Path:
    """kwok's fast node and pod stages; a pod annotated NEVER_READY stays pending (a version that
    never gets ready, simulated)."""
    stages = [s for s in yaml.safe_load_all((TOOLS / "kwok" / "stages.yaml").read_text()) if s]
    for stage in stages:
        if stage["metadata"]["name"] == "pod-ready":
            stage["spec"]["selector"]["matchExpressions"].append(
                {"key": f'.metadata.annotations["{NEVER_READY}"]', "operator": "DoesNotExist"}
            )
    path = root / "kwok-stages.yaml"
    path.write_text(yaml.safe_dump_all(stages))
    return path


def add_kwok_nodes(cluster: LocalCluster, count: int, start_index: int = 0) -> list[str]:
    """Simulated nodes (kwok): Ready at once; only pods that tolerate their taint land there."""
    core = cluster.core()
    names = []
    for i in range(start_index, start_index + count):
        name = f"kwok-node-{i}"
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "250"}
        core.create_node(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                },
                "spec": {"taints": [{"key": KWOK_ANNOTATION, "value": "fake", "effect": "NoSchedule"}]},
                "status": {"allocatable": capacity, "capacity": capacity},
            }
        )
        names.append(name)

    def ready() -> bool:
        nodes = {n.metadata.name: n for n in core.list_node(label_selector="type=kwok").items}
        return all(
            any(c.type == "Ready" and c.status == "True" for c in (nodes[n].status.conditions or []))
            for n in names
            if n in nodes
        ) and all(n in nodes for n in names)

    wait_for(f"{count} kwok nodes", ready, 60)
    return names


def restricted_namespace(cluster: LocalCluster, name: str) -> None:
    """A namespace whose pods must pass the restricted Pod Security Standard (enforced at admission)."""
    from kubernetes.client.exceptions import ApiException

    core = cluster.core()
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}}
    try:
        core.create_namespace(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.patch_namespace(name, {"metadata": {"labels": RESTRICTED}})


def running(root: str | Path) -> LocalCluster | None:
    """The cluster started under `root` if its API server still answers."""
    path = Path(root).resolve()
    if not (path / "cluster.json").exists():
        return None
    cluster = LocalCluster.load(path)
    try:
        return cluster if cluster.pids and _api_ready(path / "pki", cluster.api_port) else None
    except OSError:
        return None


def stop(cluster: LocalCluster) -> None:
    """Stop every process this cluster started, by its PID, newest first; wait for each to exit."""
    root = Path(cluster.root)
    if cluster.real_node:
        stop_node(cluster)
    for name in reversed(list(cluster.pids)):
        if name in {"kubelet", "cri-dockerd", "kube-proxy"}:
            continue
        terminate(cluster.pids[name])
    cluster.pids.clear()
    if root.exists():
        cluster.save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.k8s.control_plane")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a local cluster under DIR")
    up.add_argument("dir")
    up.add_argument("--kwok-nodes", type=int, default=1)
    up.add_argument("--real-node", action="store_true")
    up.add_argument("--registry-port", type=int, default=None, help="the registry's port (default: a free one)")
    up.add_argument("--namespace", default=None, help="also create this namespace, enforcing the restricted standard")
    down = sub.add_parser("down", help="stop the cluster started under DIR")
    down.add_argument("dir")
    args = parser.parse_args(argv)
    if args.command == "up":
        cluster = running(args.dir) or start(
            args.dir, kwok_nodes=args.kwok_nodes, real_node=args.real_node, registry_port=args.registry_port
        )
        if args.namespace:
            restricted_namespace(cluster, args.namespace)
        print(f"kubeconfig {cluster.kubeconfig}\nregistry   {cluster.registry}")
    else:
        path = Path(args.dir)
        if (path / "cluster.json").exists():
            stop(LocalCluster.load(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
