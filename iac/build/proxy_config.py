"""The proxy's configuration: nginx.conf (fixed per spec) and the upstream list (per rollout)."""

from __future__ import annotations

from iac.build.templating import render_template

PROXY_PORT = 8080
PROXY_GRPC_PORT = 8081  # the gRPC server's port inside the proxy container (deploy.grpc_host_port on the host)
UPSTREAM_FILE = "/etc/modelstack/upstream.conf"  # in the mounted config directory
GRPC_UPSTREAM_FILE = "/etc/modelstack/upstream-grpc.conf"  # the same replicas at their gRPC port
PARKED = "server 127.0.0.1:9 down;\n"  # nginx needs one server; this one is never used
# Above any server limit, so the model server answers an oversized body with its own 413 message.
PROXY_MAX_BODY_BYTES = 64 * 1024 * 1024


def nginx_conf(name: str, replicas: int, grpc: bool = False) -> str:
    """The proxy's nginx.conf; with ``grpc`` also an HTTP/2 server passing gRPC to the replicas."""
    return render_template(
        "nginx.conf.j2", name=name, workers=2, port=PROXY_PORT, upstream_file=UPSTREAM_FILE,
        max_body_bytes=PROXY_MAX_BODY_BYTES, tries=max(2, replicas + 1),
        grpc_port=PROXY_GRPC_PORT if grpc else None, grpc_upstream_file=GRPC_UPSTREAM_FILE,
    )


def upstream_conf(replicas: list[str], port: int) -> str:
    """One line per ready replica (docker resolves the container names on the stack's network)."""
    if not replicas:
        return PARKED
    return "".join(f"server {name}:{port} max_fails=1 fail_timeout=2s;\n" for name in sorted(replicas))
