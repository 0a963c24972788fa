"""Routes: the common ones, the router, and the docs table; dispatch, ``Allow``, the 404 hint and
the route docs all come from one table per task (the family's routes, then ``COMMON_ROUTES``).

``<name>`` in a path is the served model's name; ``/versions/<version>`` may follow it (only
version 1 exists). ``python -m serving.predict`` prints the predict task's table as it appears in
docs/serving.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from serving.auth import check_api_key
from serving.errors import ClientError, show
from serving.messages import Request, Response
from serving.state import ModelState

Reply = Callable[[Callable[[], Response]], None]
# A handler answers now (a Response) or later: it returns None and calls reply(make_response).
Handler = Callable[[ModelState, Request, Reply], "Response | None"]

GET = ("GET", "HEAD")
POST = ("POST",)
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


def healthz(state: ModelState, request: Request, reply: Reply) -> Response:
    return Response(200, b'{"status":"ok"}')


def readyz(state: ModelState, request: Request, reply: Reply) -> Response:
    return Response(200, b'{"status":"ready"}') if state.ready else Response(503, b'{"status":"loading"}')


def metrics(state: ModelState, request: Request, reply: Reply) -> Response:
    return Response(200, state.metrics.render(), PROMETHEUS)


@dataclass(frozen=True)
class Route:
    """One route: its metrics label, methods, path pattern, handler and one line of docs."""

    name: str
    methods: tuple[str, ...]
    path: str
    handler: Handler
    doc: str
    open: bool = False  # answered without the API key: probes must work without secrets
    regex: re.Pattern[str] | None = field(default=None, compare=False)


# Every family's server answers these; a family adds its own (``serving.family``).
COMMON_ROUTES: tuple[Route, ...] = (
    Route("metrics", GET, "/metrics", metrics, "Prometheus text exposition"),
    Route("healthz", GET, "/healthz", healthz, "200 while the process is up", open=True),
    Route(
        "readyz",
        GET,
        "/readyz",
        readyz,
        "200 once the model is loaded and warmed up, else 503 (the Docker health check)",
        open=True,
    ),
)


def _compile(path: str) -> re.Pattern[str] | None:
    if "<name>" not in path:
        return None
    prefix, suffix = path.split("<name>")
    return re.compile(re.escape(prefix) + r"(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?" + re.escape(suffix))


class Router:
    """Finds the route for a request and checks the API key, the method and the model name."""

    def __init__(self, routes: tuple[Route, ...], model_name: str, api_key: bytes | None) -> None:
        self.routes = routes
        self.model_name = model_name
        self.api_key = api_key
        self._fixed = {r.path: r for r in routes if "<name>" not in r.path}
        self._patterns = [(r, _compile(r.path)) for r in routes if "<name>" in r.path]
        self.hint = "try " + ", ".join(r.path for r in routes)
        self._match = lru_cache(maxsize=1024)(self._find)

    def _find(self, path: str) -> tuple[Route, str | None, str | None] | None:
        route = self._fixed.get(path)
        if route is not None:
            return route, None, None
        for route, regex in self._patterns:
            assert regex is not None
            match = regex.fullmatch(path)
            if match is not None:
                return route, match["name"], match["version"]
        return None

    def resolve(self, request: Request) -> Route:
        """The request's route; ClientError 401/404/405 when it has none or may not use it."""
        path = request.target.partition("?")[0]
        found = self._match(path)
        if found is None:
            check_api_key(request.headers, self.api_key)  # no route listing for anonymous clients
            raise ClientError(404, f"no route {show(path)}; {self.hint}")
        route, name, version = found
        request.route = route.name
        if not route.open:
            check_api_key(request.headers, self.api_key)
        if request.method not in route.methods:
            raise ClientError(
                405,
                f"{request.method} is not allowed on {path}; use {' or '.join(route.methods)}",
                headers=(("Allow", ", ".join(route.methods)),),
            )
        if name is not None:
            check_model(name, version, self.model_name)
        return route


def check_model(name: str, version: str | None, served: str) -> None:
    """The model a request names (HTTP path or gRPC message) must be the one served; 404 otherwise."""
    if name != served:
        raise ClientError(404, f"model {show(name)} is not served here; this server serves {show(served)}")
    if version not in (None, "1"):
        raise ClientError(404, f"model {show(name)} has no version {show(version)}; the only version is 1")


def docs_table(routes: tuple[Route, ...]) -> str:
    """A task's route table (its family's routes, then the common ones) in Markdown, as docs/serving.md
    shows it."""
    lines = ["| route | what |", "|---|---|"]
    for route in (*routes, *COMMON_ROUTES):
        lines.append(f"| `{route.methods[0]} {route.path}` | {route.doc} |")
    return "\n".join(lines) + "\n"
