"""Start-up, readiness and shutdown: bind, answer while the model loads, serve, drain on SIGTERM.

The server binds and answers first, then loads and warms up the model in a thread, so
``/healthz`` answers during loading and ``/readyz`` (and predict) answer 503 until the model is
ready. A model that fails to load ends the process with exit code 1; a bad config with 2.
SIGTERM (or SIGINT): stop accepting, close idle keep-alive connections, let in-flight and queued
requests finish (up to the config's ``drain_timeout_s``: ``DRAIN_TIMEOUT_S`` unless the generator
sized it for the model), exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from serving import family
from serving.app import App
from serving.auth import read_api_key
from serving.batching import settle
from serving.config import DEFAULT_DRAIN_TIMEOUT_S, ServingConfig
from serving.listener import HttpServer, raise_open_file_limit, return_freed_memory
from serving.logs import flush_logs, flush_on, log_event, stop_flushing
from serving.state import ModelState

if TYPE_CHECKING:
    from serving.family import GrpcFront
    from serving.state import Served

# SIGTERM waits this long for in-flight requests by default; Docker's default stop timeout is 10 s.
DRAIN_TIMEOUT_S = DEFAULT_DRAIN_TIMEOUT_S
# The loop thread holds the GIL most of the time; switching every 0.5 ms instead of 5 ms lets the
# inference thread take its result back without waiting several intervals (a p99 cost).
SWITCH_INTERVAL_S = 0.0005


def main() -> int:
    """Serve the configured model until SIGTERM; return the process exit code."""
    try:
        return _serve()
    finally:
        flush_logs()


def _serve() -> int:
    try:
        config = ServingConfig.load()
        api_key = read_api_key(config)
    except ValueError as exc:
        log_event(event="config_error", error=str(exc))
        return 2
    return_freed_memory()
    state = ModelState(config, api_key)
    try:
        server = HttpServer((config.host, config.port), App(state), config)
    except OSError as exc:
        log_event(event="bind_error", host=config.host, port=config.port, error=str(exc))
        return 1
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(run(server, state))


def _loop_factory() -> Any:
    """uvloop's event loop when installed (as in the image): its transports cost less per request."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return uvloop.new_event_loop


async def run(server: HttpServer, state: ModelState) -> int:
    """Serve until SIGTERM/SIGINT; the model loads while the server already answers."""
    loop = asyncio.get_running_loop()
    flush_on(loop)
    try:
        return await _serve_until_stopped(loop, server, state)
    finally:
        stop_flushing()


async def _serve_until_stopped(loop: asyncio.AbstractEventLoop, server: HttpServer, state: ModelState) -> int:
    """Start, load the model, serve until SIGTERM/SIGINT, drain; the exit code."""
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    config = state.config
    host, port = server.address
    try:
        grpc_front = await _start_grpc(state)
    except OSError as exc:
        log_event(event="bind_error", host=config.host, port=config.grpc_port, error=str(exc))
        await server.stop(timeout=1.0)
        return 1
    open_files, _ = raise_open_file_limit()
    log_event(
        event="listening",
        host=host,
        port=port,
        model=config.model_name,
        loop=type(loop).__module__.split(".")[0],
        open_files=open_files,
        max_connections=config.max_connections,
        grpc_port=grpc_front.port if grpc_front else None,
    )
    if config.max_connections + 64 > open_files:
        log_event(
            event="warning",
            problem=f"max_connections {config.max_connections} is near the open-file "
            f"limit {open_files}; accepts may fail with EMFILE before the cap answers 503",
        )

    # Loading runs in a daemon thread so the loop answers /healthz (and 503s) meanwhile, and a
    # SIGTERM during a long load exits at once instead of waiting for it.
    load: asyncio.Future[Served] = loop.create_future()
    threading.Thread(target=_load_in_background, args=(config, loop, load), name="model-load", daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({load, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not load.done():  # SIGTERM while loading: nothing to finish
        await _stop(server, grpc_front, 1.0)
        log_event(event="stopped", drained=True)
        return 0
    try:
        served = load.result()
    except Exception as exc:  # any load failure is fatal: report it and exit non-zero
        log_event(event="load_failed", artifact=config.artifact, error=f"{type(exc).__name__}: {exc}")
        await _stop(server, grpc_front, 1.0)
        return 1
    state.set_ready(served, loop)
    # The family's fields first: a name it shares with these (say "task") cannot take their place.
    log_event(
        **{
            **served.ready_fields(),
            "event": "ready",
            "model": config.model_name,
            "port": port,
            "task": config.task,
            "auth": "api_key" if state.api_key else "none",
        }
    )

    await stopping
    drained = await _stop(server, grpc_front, config.drain_timeout_s)
    try:  # what the model already accepted is still finished (answers for clients that left too)
        await asyncio.wait_for(state.drain(), 1.0)
    except TimeoutError:
        drained = False
    state.close()
    log_event(event="stopped", drained=drained)
    return 0


async def _start_grpc(state: ModelState) -> GrpcFront | None:
    """The family's gRPC service on ``grpc_port`` (same loop and state), or None when it is off."""
    config, port = state.config, state.config.grpc_port
    if port is None:
        return None
    front = family.grpc_front(state, config.host, port)
    if front is None:
        log_event(
            event="warning",
            problem=f"grpc_port {port}: task {config.task!r} has no gRPC service; nothing listens there",
        )
        return None
    await front.start()
    return front


async def _stop(server: HttpServer, grpc_front: GrpcFront | None, timeout: float) -> bool:
    """Drain HTTP and gRPC together: no new connections or calls, in-flight ones get ``timeout``."""
    if grpc_front is None:
        return await server.stop(timeout=timeout)
    drained, calls_drained = await asyncio.gather(server.stop(timeout=timeout), grpc_front.stop(timeout))
    return drained and calls_drained


def _load_in_background(config: ServingConfig, loop: asyncio.AbstractEventLoop, result: asyncio.Future[Served]) -> None:
    try:
        loaded, error = family.family(config.task).load(config), None
    except Exception as exc:
        loaded, error = None, exc
    try:
        loop.call_soon_threadsafe(settle, result, loaded, error)
    except RuntimeError:  # the loop is gone: the server stopped while loading
        pass
