"""A serving family that exists only for the tests: the seam (``serving.families``) with no model.

``POST /echo/<name>`` answers the body reversed, later (from the loop, as a runtime's answer
would come back). The lifecycle's calls into the served object are logged, so a test sees that
start, drain and close happen, and in that order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.config import ServingConfig
from serving.logs import log_event
from serving.messages import Request, Response
from serving.routes import POST, Reply, Route
from serving.state import ModelState


class Echo:
    """The "model": a loop to answer from, and a count of what it answered."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        self.answered = 0

    def start(self, loop: asyncio.AbstractEventLoop, metrics: Any) -> None:
        self.loop = loop
        log_event(event="echo_started")

    async def drain(self) -> None:
        log_event(event="echo_drained", answered=self.answered)

    def close(self) -> None:
        log_event(event="echo_closed")

    def ready_fields(self) -> dict[str, Any]:
        return {"echo_model": self.config.artifact}


def _echo(state: ModelState, request: Request, reply: Reply) -> None:
    echo = state.require_ready()
    assert isinstance(echo, Echo) and echo.loop is not None
    body = bytes(request.body)[::-1]

    def answer() -> Response:
        echo.answered += 1
        return Response(200, body, b"application/octet-stream")

    echo.loop.call_soon(reply, answer)


def load(config: ServingConfig) -> Echo:
    return Echo(config)


def routes(config: ServingConfig) -> tuple[Route, ...]:
    return (Route("echo", POST, "/echo/<name>", _echo, "the body, reversed"),)
