"""What a rollout on Kubernetes asks of the cluster, through its API server only: pods by label, HTTP to
a pod's port through the API server's pod proxy, and a command run in a pod (exec).

The provider that judges a rollout may run anywhere the kubeconfig works, outside the cluster network,
so it never dials a pod or a Service itself: `/metrics`, the metadata and the replayed predictions go
through `pods/<pod>:<port>/proxy/...`, and the proxy pods are reconfigured by exec. The official
client (`kubernetes`) does the TLS, the credentials and the exec websocket.
"""

from __future__ import annotations

import json
from typing import Any

TIMEOUT_S = 5.0  # one proxied request; a replayed prediction slower than this counts as failed


def configuration(kubeconfig: str | None, context: str | None) -> Any:
    """The client configuration for a kubeconfig (None: the usual rules) and context (None: its current)."""
    from kubernetes import client, config

    settings = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context, client_configuration=settings, persist_config=False
    )
    return settings


class Cluster:
    """One namespace of one cluster, as the kubeconfig's user sees it."""

    @classmethod
    def of(cls, props: dict[str, Any]) -> Cluster:
        """The cluster a dynamic provider's inputs name (`settings.cluster_access`)."""
        return cls(props.get("kubeconfig"), props.get("context"), props["namespace"])

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        # Any: the client's models make every field optional; the calls below check what they read.
        self.api: Any = client.ApiClient(configuration(kubeconfig, context))
        self.core: Any = client.CoreV1Api(self.api)
        self.apps: Any = client.AppsV1Api(self.api)

    def ready_pods(self, labels: dict[str, str]) -> list[str]:
        """Names of the pods with these labels that are ready and not terminating."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        pods: list[Any] = self.core.list_namespaced_pod(
            self.namespace, label_selector=selector, _request_timeout=10
        ).items
        return sorted(
            pod.metadata.name
            for pod in pods
            if not pod.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        )

    def wait_endpoints(self, service: str, count: int, timeout: float) -> bool:
        """Until the Service's EndpointSlices list `count` ready endpoints (True), or `timeout` (False).
        A pod is ready before the Service routes to it: the slices, then every node's kube-proxy, follow."""
        import time

        from kubernetes import client

        discovery = client.DiscoveryV1Api(self.api)
        deadline = time.monotonic() + timeout
        while True:
            slices = discovery.list_namespaced_endpoint_slice(
                self.namespace, label_selector=f"kubernetes.io/service-name={service}", _request_timeout=10
            ).items
            ready = sum(
                1
                for s in slices
                for e in (s.endpoints or [])
                if e.conditions is not None and e.conditions.ready and not e.conditions.terminating
            )
            if ready >= count:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    def request(
        self,
        pod: str,
        port: int,
        path: str,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = TIMEOUT_S,
    ) -> bytes | None:
        """GET (or POST `body`, JSON) `path` on the pod's port through the API server; None on any failure
        (a 4xx/5xx of the pod, a timeout, a pod gone)."""
        from kubernetes.client.exceptions import ApiException

        resource = f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}"
        header_params = {"Accept": "*/*", **(headers or {})}
        if body is not None:
            header_params["Content-Type"] = "application/json"
        try:
            method, url, headers_, payload, post = self.api.param_serialize(
                "POST" if body is not None else "GET",
                resource,
                header_params=header_params,
                # The client JSON-encodes what it is given: hand it the decoded body, sent as the client sent it.
                body=json.loads(body) if body is not None else None,
                auth_settings=["BearerToken"],
            )
            response: Any = self.api.call_api(
                method, url, header_params=headers_, body=payload, post_params=post, _request_timeout=timeout
            )
            data = response.read()
        except (ApiException, OSError, ValueError):
            return None
        except Exception as exc:  # noqa: BLE001 - urllib3's timeouts and protocol errors: a failed answer
            if type(exc).__module__.startswith("urllib3"):
                return None
            raise
        return bytes(data) if 200 <= response.status < 300 else None

    def run(self, pod: str, container: str, command: list[str], timeout: float = 30.0) -> tuple[int, str]:
        """(exit code, stdout + stderr) of `command` run in the pod's container."""
        from kubernetes.stream import stream

        session = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            self.namespace,
            container=container,
            command=command,
            stdin=False,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        try:
            session.run_forever(timeout=timeout)
            output = session.read_stdout() + session.read_stderr()
            code = session.returncode
        finally:
            session.close()
        return (0 if code is None else int(code)), output
