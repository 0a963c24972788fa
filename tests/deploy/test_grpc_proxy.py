"""gRPC through the Docker target's proxy, without Docker: nginx.conf, the settings a spec gives, the published ports."""

from __future__ import annotations

from pathlib import Path

from fake_docker import FakeDocker

from iac.build.proxy_config import nginx_conf
from iac.spec.load import load_resolved

OWNER = "digits/dev/digits"


def _spec(folder: Path, grpc_host_port: int | None):  # type: ignore[no-untyped-def]
    spec = folder / "model.yaml"
    if grpc_host_port is not None:
        text = spec.read_text().replace(
            "  host_port: 8501\n", f"  host_port: 8501\n  grpc_host_port: {grpc_host_port}\n"
        )
        spec.write_text(text)
    return load_resolved(spec)


def test_nginx_conf_has_a_grpc_server_only_when_asked() -> None:
    plain = nginx_conf("digits", 2)
    assert "grpc" not in plain and "http2" not in plain
    conf = nginx_conf("digits", 2, grpc=True)
    assert conf.startswith(plain.split("    upstream model {")[0])  # the same settings before the upstreams
    assert "upstream model_grpc {\n        include /etc/modelstack/upstream-grpc.conf;\n        keepalive 64;" in conf
    assert "listen 8081 http2;" in conf and "grpc_pass grpc://model_grpc;" in conf
    assert "grpc_next_upstream error timeout non_idempotent;" in conf
    assert "grpc_next_upstream_tries 3;" in conf
    assert conf.count("{") == conf.count("}")


def test_settings_carry_grpc_only_for_a_stack_that_publishes_it(spec_folder: Path) -> None:
    from iac.deploy.targets.docker.settings import grpc_target, proxy_settings, replica_settings

    plain = _spec(spec_folder, None)
    # Stacks that do not publish gRPC keep the settings they had: no proxy re-create, no new version.
    assert "grpc_host_port" not in proxy_settings(plain) and "grpc_port" not in replica_settings(plain)
    assert grpc_target(plain) is None
    published = _spec(spec_folder, 8001)
    assert proxy_settings(published) == {
        "bind_address": "127.0.0.1",
        "host_port": 8501,
        "proxy_port": 8080,
        "grpc_host_port": 8001,
        "proxy_grpc_port": 8081,
    }
    assert replica_settings(published)["grpc_port"] == 8001  # serving.grpc_port's default
    assert grpc_target(published) == "127.0.0.1:8001"


def test_proxy_publishes_the_grpc_port_and_parks_its_upstream(
    tmp_path: Path, fake_docker: FakeDocker, no_sleep: list[float]
) -> None:
    from iac.deploy.dynamic import OWNER_LABEL
    from iac.deploy.targets.docker.proxy import ProxyProvider

    fake_docker.networks.create("modelstack-dev-digits", labels={OWNER_LABEL: OWNER})
    props = {
        "owner": OWNER,
        "container_name": "modelstack-dev-digits-proxy",
        "image": "modelstack-proxy:bookworm-nginx",
        "network_name": "modelstack-dev-digits",
        "settings": {
            "bind_address": "127.0.0.1",
            "host_port": 8501.0,
            "proxy_port": 8080.0,
            "grpc_host_port": 8001.0,
            "proxy_grpc_port": 8081.0,
        },
        "config_dir": str(tmp_path / "proxy"),
        "nginx_conf": nginx_conf("digits", 2, grpc=True),
        "parked_upstream": "server 127.0.0.1:9 down;\n",
    }
    created = ProxyProvider().create(props)
    container = fake_docker.containers.get(created.id)
    assert container.kwargs["ports"] == {"8080/tcp": ("127.0.0.1", 8501), "8081/tcp": ("127.0.0.1", 8001)}
    assert (tmp_path / "proxy" / "upstream-grpc.conf").read_text() == "server 127.0.0.1:9 down;\n"

    # A stack that turns gRPC on later: the reloaded nginx.conf includes a file that exists.
    (tmp_path / "proxy" / "upstream-grpc.conf").unlink()
    ProxyProvider().update(created.id, created.outs, {**created.outs, "nginx_conf": props["nginx_conf"] + "\n"})
    assert (tmp_path / "proxy" / "upstream-grpc.conf").exists()
