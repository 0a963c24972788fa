"""One serving schema: the spec's `serving` section and the server's config agree on every field, default
and bound, both ways: a value the spec accepts, the server accepts, and the reverse (but for 0, any
free port, which only the server takes: a container's port must be known to publish it)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from iac.spec.models import Serving
from serving.config import SETTINGS, ServingConfig

BASE: dict[str, Any] = {
    "model_name": "m",
    "artifact": "m.tflite",
    "inputs": [{"name": "x", "shape": [1], "dtype": "float32"}],
}
# Cross-field rules both sides keep (ports differ; the buffer holds a body); values that respect them.
APART = {"port": 9000, "grpc_port": 9001, "max_buffered_bytes": 2**40, "max_body_bytes": 1024}


def test_the_spec_has_exactly_the_servers_settings() -> None:
    assert list(Serving.model_fields) == list(SETTINGS)
    server_fields = {f.name for f in dataclasses.fields(ServingConfig)}
    assert set(SETTINGS) <= server_fields


@pytest.mark.parametrize("name", list(SETTINGS))
def test_defaults_agree(name: str) -> None:
    spec_default = Serving.model_fields[name].default
    server_default = next(f.default for f in dataclasses.fields(ServingConfig) if f.name == name)
    parsed = getattr(ServingConfig.from_dict(BASE), name)
    assert spec_default == server_default == parsed == SETTINGS[name].default
    assert Serving().model_dump()[name] == parsed


def _spec_accepts(name: str, value: Any) -> bool:
    others = {k: v for k, v in APART.items() if k != name}
    try:
        Serving.model_validate({**others, name: value})
    except ValidationError:
        return False
    return True


def _server_accepts(name: str, value: Any) -> bool:
    others = {k: v for k, v in APART.items() if k != name}
    try:
        ServingConfig.from_dict({**BASE, **others, name: value})
    except ValueError:
        return False
    return True


def _probes(name: str) -> list[Any]:
    """Values at, inside and just outside the setting's bounds (or its pattern), and of other kinds."""
    s = SETTINGS[name]
    if s.choices:
        return [*s.choices, "SPIN", "", "spin ", 1, True, None]
    if s.pattern is not None:
        return ["MODELSTACK_API_KEY", "_K", "K" * 128, "K" * 129, "lower", "1BAD", "A-B", "", 3, None]
    assert s.low is not None and s.high is not None
    step = 1 if s.integer else 0.001
    values: list[Any] = [
        s.low,
        s.high,
        s.low - step,
        s.high + step,
        (s.low + s.high) / 2 if not s.integer else s.low + 1,
        True,
        "1",
        None,
        0,
    ]
    if s.integer:
        values.append(float(s.low) + 0.5)
    return values


@pytest.mark.parametrize("name", list(SETTINGS))
def test_bounds_agree_both_ways(name: str) -> None:
    schema = Serving.model_json_schema()["properties"][name]  # what `modelstack schema` shows users
    number = next((t for t in schema.get("anyOf", [schema]) if t.get("type") in ("integer", "number")), None)
    s = SETTINGS[name]
    if s.choices:
        assert schema["enum"] == list(s.choices)
    elif s.pattern is None:
        assert number is not None and (number["minimum"], number["maximum"]) == (s.low, s.high)
    assert schema["description"] == s.description
    for value in _probes(name):
        spec, server = _spec_accepts(name, value), _server_accepts(name, value)
        if value == 0 and s.ephemeral and not isinstance(value, bool):
            assert server and not spec, "0 is any free port: the server's alone"
            continue
        assert spec == server, (
            f"{name}={value!r}: spec {'accepts' if spec else 'refuses'}, server {'accepts' if server else 'refuses'}"
        )


def test_cross_field_rules_agree() -> None:
    for values in (
        {"port": 9000, "grpc_port": 9000},
        {"max_body_bytes": 2048, "max_buffered_bytes": 1024},
        {"port": 9000, "grpc_port": 9001},
        {"max_body_bytes": 1024, "max_buffered_bytes": 1024},
    ):
        try:
            Serving.model_validate(values)
            spec = True
        except ValidationError:
            spec = False
        try:
            ServingConfig.from_dict({**BASE, **values})
            server = True
        except ValueError:
            server = False
        assert spec == server, values


def test_render_hands_the_validated_section_through() -> None:
    """serving.json carries every setting as the spec validated it: nothing listed by hand, nothing left out."""
    from prep_reports import passing_report

    from iac.build.render import serving_config
    from iac.spec.models import ResolvedSpec

    spec = ResolvedSpec.model_validate(
        {
            "spec_file": "/x/model.yaml",
            "model_path": "/x/m.keras",
            "calibration_path": "/x/c.npz",
            "evaluation_path": "/x/e.npz",
            "spec": {
                "name": "digits",
                "model": {"path": "m.keras", "inputs": [{"name": "pixels", "shape": [64]}]},
                "data": {"calibration": "c.npz", "evaluation": "e.npz"},
                "serving": {"threads": 64, "max_latency_ms": 10000, "api_key_env": "DIGITS_KEY", "grpc_port": None},
            },
        }
    )
    config = serving_config(spec, passing_report())
    assert {k: config[k] for k in SETTINGS} == spec.spec.serving.model_dump(mode="json")
    server = ServingConfig.from_dict(config)
    assert (server.threads, server.max_latency_ms, server.api_key_env, server.grpc_port) == (
        64,
        10000.0,
        "DIGITS_KEY",
        None,
    )
