"""The serving-family registry: which module serves each ``task`` (``ServingConfig.task``).

A family is a module, imported only when its task is served (so the image's other runtimes never
load), that implements the contract in ``serving.family``: ``load(config)`` and
``routes(config)``, optionally ``check(data)`` and ``grpc_front(state, host, port)``. Nothing
else in ``serving/`` branches on the task: a new family is one module and one line here.

Only the standard library, so ``serving.config`` can check ``task`` with it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

# task (the spec's model.task, as render writes it) -> the module implementing it. "predict" (the
# default) is one forward pass over tensors or texts: Keras models and Hugging Face encoders,
# whose tasks name what the output means; the others each hold their own runtime.
FAMILIES: dict[str, str] = {
    "predict": "serving.predict",
    "sentence-embedding": "serving.predict",
    "text-classification": "serving.predict",
    "text-generation": "serving.generate",
    "speech-recognition": "serving.speech",
}
DEFAULT_TASK = "predict"


class FamilyUnavailable(ValueError):
    """The task is known but its module is not in this image (or not written yet)."""


def module(task: str) -> ModuleType:
    """The module serving ``task``; ValueError naming the field when there is none."""
    try:
        path = FAMILIES[task]
    except KeyError:
        raise ValueError(f"task: must be one of {', '.join(FAMILIES)}, got {task!r}") from None
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name is not None and path.startswith(exc.name):
            raise FamilyUnavailable(
                f"task: {task!r} is not available in this server ({path} is missing); "
                f"serve it with an image built for that task"
            ) from exc
        raise


def check(task: str, data: Mapping[str, Any]) -> list[str]:
    """The family's problems with a raw serving.json (``task`` already known to be valid)."""
    try:
        found = module(task)
    except FamilyUnavailable as exc:
        return [str(exc)]
    return list(getattr(found, "check", lambda _: [])(data))


def takes_inputs(task: str) -> bool:
    """Whether serving.json lists the model's inputs for ``task``: a family taking no tensor signature
    (e.g. text generation, which takes text through its own API) says ``INPUTS = False``."""
    return bool(getattr(module(task), "INPUTS", True))


def endpoint_path(task: str, model_name: str) -> str:
    """The path a client of ``task``'s model calls first (what a stack's ``endpoint`` output shows): the
    family's ``ENDPOINT`` (e.g. OpenAI's transcription route), else TF Serving's predict."""
    return str(getattr(module(task), "ENDPOINT", "/v1/models/{name}:predict")).format(name=model_name)


def warm_up_request(task: str, model_name: str) -> tuple[str, dict[str, Any]] | None:
    """The family's own warm-up request (path, JSON body) a deployer sends a new replica before it takes
    traffic, or None: the family answers the predict protocol, warmed up with zeros of its inputs."""
    make = getattr(module(task), "warm_up_request", None)
    return None if make is None else make(model_name)
