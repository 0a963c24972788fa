"""The ``text-generation`` serving family: a GGUF model on llama.cpp with continuous batching.

``load(config)`` opens the model and starts the decode thread (``engine.Engine``);
``routes(config)`` is the family's route table (``handlers``): the OpenAI-compatible API and the
Open Inference Protocol generate extension; the server adds the common routes. The engine is the
served object (``serving.state.Served``): handlers reach it through ``state.require_ready()``.
llama-cpp-python is imported only when this family is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.config import ServingConfig
    from serving.generate.engine import Engine
    from serving.routes import Route

# serving.json lists no tensor inputs for this family: it takes text through its own API (``check``
# refuses them), so the generator leaves the spec's signature out (``serving.families.takes_inputs``).
INPUTS = False
ENDPOINT = "/v1/chat/completions"  # what a stack's `endpoint` output shows


def warm_up_request(model_name: str) -> tuple[str, dict[str, Any]]:
    """What a deployer sends a new replica before it takes traffic: one greedy token."""
    return "/v1/completions", {"model": model_name, "prompt": "Hello", "max_tokens": 1, "temperature": 0}


def load(config: ServingConfig) -> Engine:
    """Open the configured GGUF file, start the decode thread and warm it up with one generation."""
    from serving.generate.engine import Engine

    engine = Engine.open(config)
    engine.warm_up()
    return engine


def routes(config: ServingConfig) -> tuple[Route, ...]:
    """The family's routes; the server adds the common ones (healthz, readyz, metrics)."""
    from serving.generate.handlers import ROUTES

    return ROUTES


def check(data: Mapping[str, Any]) -> list[str]:
    """What only this family refuses in a serving.json: tensor inputs, a file that is not GGUF."""
    problems = []
    if data.get("inputs"):
        problems.append("inputs: a text-generation model takes text (the OpenAI or generate API); remove inputs")
    artifact = data.get("artifact")
    if isinstance(artifact, str) and not artifact.lower().endswith(".gguf"):
        problems.append(f"artifact: a text-generation model is a .gguf file, got {artifact!r}")
    if data.get("max_batch_size", 1) not in (0, 1):
        problems.append("max_batch_size: text generation batches sequences (max_sequences); remove max_batch_size")
    return problems
