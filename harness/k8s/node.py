"""One real node for the local cluster: kubelet ▸ cri-dockerd ▸ the running dockerd, a bridge CNI for pod
IPs reachable from the host, and kube-proxy (iptables) so Services answer on their cluster IPs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import yaml

from harness.k8s.cluster import BIN, BRIDGE, NODE_IP, PAUSE_IMAGE, POD_CIDR, REAL_NODE, LocalCluster, kubeconfig
from harness.processes import free_port, spawn, terminate, wait_for

CNI_BIN = "/usr/lib/cni"
# The kubelet sets these kernel settings to its own defaults; they are saved before it starts and put back after.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Chains the kubelet adds to the host's firewall (kube-proxy --cleanup removes kube-proxy's own).
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


def start_node(cluster: LocalCluster, pki: Path, server: str, ports: dict[str, int]) -> None:
    root = Path(cluster.root)
    pids = cluster.pids
    cni = root / "cni"
    for sub in ("conf", "cache", "ipam"):
        (cni / sub).mkdir(parents=True, exist_ok=True)
    (cni / "conf" / "10-modelstack.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "modelstack-k8s",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "ipMasq": True,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(cni / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                    # Docker sets the FORWARD policy to DROP and bridged packets pass through it
                    # (bridge-nf-call-iptables): without this, a pod reaches no other pod, directly
                    # or through a Service (the canary proxy does). It accepts each pod's traffic in
                    # a CNI-FORWARD chain and removes a pod's rules with the pod; the empty chain
                    # stays (another cluster on this host may use it).
                    {"type": "firewall", "backend": "iptables"},
                ],
            }
        )
    )
    socket_path = root / "cri-dockerd.sock"
    spawn(
        root,
        "cri-dockerd",
        [
            str(BIN / "cri-dockerd"),
            f"--container-runtime-endpoint=unix://{socket_path}",
            "--docker-endpoint=unix:///var/run/docker.sock",
            f"--cri-dockerd-root-directory={root / 'cri-dockerd'}",
            f"--pod-infra-container-image={PAUSE_IMAGE}",
            f"--streaming-bind-addr=127.0.0.1:{free_port()}",
            "--network-plugin=cni",
            f"--cni-bin-dir={CNI_BIN}",
            f"--cni-conf-dir={cni / 'conf'}",
            f"--cni-cache-dir={cni / 'cache'}",
        ],
        pids,
    )
    wait_for("cri-dockerd", socket_path.exists, 60, root, "cri-dockerd")

    config = root / "kubelet.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": NODE_IP,
                "port": free_port(),
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": free_port(),
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": False},
                    "x509": {"clientCAFile": str(pki / "ca.crt")},
                },
                "authorization": {"mode": "AlwaysAllow"},
                "tlsCertFile": str(pki / "kubelet-serving.crt"),
                "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
                "cgroupDriver": "cgroupfs",
                "failSwapOn": False,
                "failCgroupV1": False,
                "evictionHard": {
                    "memory.available": "1%",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                },
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "containerRuntimeEndpoint": f"unix://{socket_path}",
                "maxPods": 40,
                "serializeImagePulls": False,
                "syncFrequency": "10s",
                "nodeStatusUpdateFrequency": "5s",
            }
        )
    )
    (root / "sysctls.json").write_text(
        json.dumps({name: Path("/proc/sys", name).read_text().strip() for name in KUBELET_SYSCTLS})
    )
    node_kubeconfig = kubeconfig(root / "node.kubeconfig", pki, "node", server)
    spawn(
        root,
        "kubelet",
        [
            str(BIN / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={node_kubeconfig}",
            f"--root-dir={root / 'kubelet'}",
            f"--cert-dir={root / 'kubelet-pki'}",
            f"--hostname-override={REAL_NODE}",
            f"--node-ip={NODE_IP}",
            "--node-labels=type=real",
            "--v=1",
        ],
        pids,
    )
    proxy_kubeconfig = kubeconfig(root / "kube-proxy.kubeconfig", pki, "kube-proxy", server)
    spawn(
        root,
        "kube-proxy",
        [
            str(BIN / "kube-proxy"),
            f"--kubeconfig={proxy_kubeconfig}",
            f"--hostname-override={REAL_NODE}",
            f"--cluster-cidr={POD_CIDR}",
            "--proxy-mode=iptables",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--healthz-bind-address=127.0.0.1:{free_port()}",
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0s",
            "--conntrack-tcp-timeout-close-wait=0s",
            "--v=1",
        ],
        pids,
    )
    core = cluster.core()

    def ready() -> bool:
        node = core.read_node(REAL_NODE)
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    wait_for("the real node", ready, 120, root, "kubelet")


def stop_node(cluster: LocalCluster) -> None:
    """Pods first (so the kubelet stops their containers), then kubelet, kube-proxy and cri-dockerd by
    PID; then what they leave on the host: mounts under the kubelet's root, the kube-proxy rules, the
    pod containers, the CNI bridge, the kubepods cgroups."""
    root = Path(cluster.root)
    pids = cluster.pids
    try:
        core = cluster.core()
        for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={REAL_NODE}").items:
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={REAL_NODE}").items
        ):
            time.sleep(0.5)
    except Exception:  # noqa: BLE001 - the API may already be gone; the sweep below still runs
        pass
    for name in ("kubelet", "kube-proxy", "cri-dockerd"):
        if name in pids:
            terminate(pids.pop(name))
    subprocess.run([str(BIN / "kube-proxy"), "--cleanup"], capture_output=True, check=False)
    _remove_pod_containers()
    for mount in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    _remove_kubepods_cgroups()
    _remove_kubelet_chains()
    saved = root / "sysctls.json"
    if saved.exists():
        for name, value in json.loads(saved.read_text()).items():
            try:
                Path("/proc/sys", name).write_text(value)
            except OSError:
                pass


def _remove_kubelet_chains() -> None:
    for command in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            for hook in ("INPUT", "OUTPUT"):
                subprocess.run(
                    [command, "-t", table, "-D", hook, "-j", "KUBE-FIREWALL"], capture_output=True, check=False
                )
            for chain in KUBELET_CHAINS:
                subprocess.run([command, "-t", table, "-F", chain], capture_output=True, check=False)
                subprocess.run([command, "-t", table, "-X", chain], capture_output=True, check=False)


def _remove_pod_containers() -> None:
    """Containers cri-dockerd made for pods (sandboxes and containers carry its type label)."""
    from iac.deploy.dynamic import docker_client

    client = docker_client()
    for container in client.containers.list(all=True, filters={"label": "io.kubernetes.docker.type"}):
        try:
            container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]


def _remove_kubepods_cgroups() -> None:
    for base in Path("/sys/fs/cgroup").glob("*/kubepods"):
        for directory in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir(directory)
        _rmdir(base)


def _rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
