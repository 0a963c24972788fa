"""The proxy's configuration: nginx.conf (fixed per spec) and the upstream list (per rollout)."""

from __future__ import annotations

from iac.build.templating import render_template

PROXY_PORT = 8080
PROXY_GRPC_PORT = 8081  # the gRPC server's port inside the proxy container (deploy.grpc_host_port on the host)
UPSTREAM_FILE = "/etc/modelstack/upstream.conf"  # in the mounted config directory
GRPC_UPSTREAM_FILE = "/etc/modelstack/upstream-grpc.conf"  # the same replicas at their gRPC port
PARKED = "server 127.0.0.1:9 down;\n"  # nginx needs one server; this one is never used
CANDIDATE_FILE = "/etc/modelstack/upstream-candidate.conf"  # the new version during a canary or shadow
SPLIT_FILE = "/etc/modelstack/split.conf"  # who answers, what is copied, what is logged: per rollout step
MIRROR_FILE = "/etc/modelstack/mirror.conf"  # `mirror /_shadow;` during a shadow rollout, else nothing
REPLAY_LOG = "/tmp/replay.log"  # request bodies of a rollout window (the proxy's tmpfs), for the agreement check
# Above any server limit, so the model server answers an oversized body with its own 413 message.
PROXY_MAX_BODY_BYTES = 64 * 1024 * 1024


def nginx_conf(name: str, replicas: int, grpc: bool = False, read_timeout_s: int = 60) -> str:
    """The proxy's nginx.conf; with ``grpc`` also an HTTP/2 server passing gRPC to the replicas.
    ``read_timeout_s``: how long it waits for a replica's answer (`iac.deploy.needs.read_timeout_s`)."""
    return render_template(
        "nginx.conf.j2",
        name=name,
        workers=2,
        port=PROXY_PORT,
        upstream_file=UPSTREAM_FILE,
        max_body_bytes=PROXY_MAX_BODY_BYTES,
        tries=max(2, replicas + 1),
        grpc_port=PROXY_GRPC_PORT if grpc else None,
        grpc_upstream_file=GRPC_UPSTREAM_FILE,
        candidate_file=CANDIDATE_FILE,
        split_file=SPLIT_FILE,
        mirror_file=MIRROR_FILE,
        replay_log=REPLAY_LOG,
        read_timeout_s=read_timeout_s,
    )


def upstream_conf(replicas: list[str], port: int) -> str:
    """One line per ready replica (docker resolves the container names on the stack's network)."""
    if not replicas:
        return PARKED
    return "".join(f"server {name}:{port} max_fails=1 fail_timeout=2s;\n" for name in sorted(replicas))


def split_conf(weight: int = 0, shadow: int = 0, replay: bool = False) -> str:
    """`weight`% of requests answered by the candidate, `shadow`% copied to it, bodies logged if `replay`.
    The split is by request (nginx's split_clients on a random request id), not by replica count."""
    pool = f"    {weight}% model_candidate;\n" if weight else ""
    copy = "    * 1;\n" if shadow >= 100 else f"    {shadow}% 1;\n    * 0;\n" if shadow else "    * 0;\n"
    return (
        f'split_clients "${{request_id}}" $model_pool {{\n{pool}    * model;\n}}\n'
        f'split_clients "${{request_id}}" $shadow_copy {{\n{copy}}}\n'
        f"map $request_method $replay_log {{\n{'    POST 1;' + chr(10) if replay else ''}    default 0;\n}}\n"
    )


def mirror_conf(shadow: bool) -> str:
    return "mirror /_shadow;\n" if shadow else "# no shadow rollout in progress\n"
