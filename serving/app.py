"""The application the HTTP front end calls: route a request, run its handler, answer, log and count it."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Protocol

from serving.errors import ClientError, error_body
from serving.logs import log_event, write_request
from serving.messages import Request, Response
from serving.routes import Route, Router
from serving.state import ModelState

_INTERNAL = Response(500, error_body("internal server error; see the server log"))


class Responder(Protocol):
    """The connection a request came in on, as the application sees it."""

    def send(self, request: Request, response: Response, close: bool = False) -> None: ...


class App:
    """Routes requests to handlers; client errors become JSON 4xx, anything else a logged 500."""

    def __init__(self, state: ModelState, routes: tuple[Route, ...] | None = None) -> None:
        """``routes``: the task's (``serving.family.routes``) unless given."""
        if routes is None:
            from serving.family import routes as task_routes

            routes = task_routes(state.config)
        self.state = state
        self.router = Router(routes, state.config.model_name, state.api_key)

    def handle(self, request: Request, conn: Responder) -> None:
        """Answer ``request`` now, or once its handler calls back (the batcher has its output)."""
        try:
            route = self.router.resolve(request)
            response = route.handler(self.state, request, lambda make: self._answer(request, conn, make))
            if response is not None:
                conn.send(request, response)
        except ClientError as exc:
            conn.send(request, Response(exc.status, error_body(exc.message), headers=exc.headers), close=exc.close)
        except Exception:
            self._internal_error(request, conn)

    def _answer(self, request: Request, conn: Responder, make: Callable[[], Response]) -> None:
        try:
            conn.send(request, make())
        except ClientError as exc:
            conn.send(request, Response(exc.status, error_body(exc.message), headers=exc.headers), close=exc.close)
        except Exception:
            self._internal_error(request, conn)

    def _internal_error(self, request: Request, conn: Responder) -> None:
        log_event(
            event="internal_error",
            method=request.method,
            path=request.target,
            error=traceback.format_exc(),
        )
        conn.send(request, _INTERNAL)

    def record(self, request: Request, status: int, remote: str) -> None:
        """The request metrics and the access-log line, once per answered request."""
        elapsed = time.perf_counter() - request.started
        self.state.metrics.request(request.route, status, elapsed)
        write_request(request.method, request.target, status, elapsed, remote)
