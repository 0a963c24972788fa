"""The gRPC service on grpc.aio instead of the tonic transport, for benchmarks/v2_bench.py to compare.

    MODELSTACK_SERVING_CONFIG=serving.json python benchmarks/grpc_aio_variant.py

Everything but the transport is the real server's: the config, the model loading, the state, the
batcher on the same asyncio loop (uvloop) and the same ``InferenceService.handle`` for every
RPC, which gets the message bytes as grpc.aio received them (generic handlers: no
deserializer) and answers bytes or a status. grpc.aio was the server's transport until it
measured at ~0.3 ms of CPU per call of its own; it stays here to show that. The script prints
``ready PORT``, then ``ok N`` (ModelInfer calls answered OK so far, from the metrics) on each
SIGUSR1, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from serving.config import ServingConfig  # noqa: E402
from serving.grpc_service import CODE_NAMES, InferenceService  # noqa: E402
from serving.predict import load  # noqa: E402
from serving.state import ModelState  # noqa: E402

METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")


def handlers(service: InferenceService, loop: asyncio.AbstractEventLoop) -> grpc.GenericRpcHandler:
    """A grpc.aio handler per RPC that hands the call to ``service.handle`` and awaits its answer."""

    def bridge(method: str) -> Any:
        async def call(message: bytes, context: grpc.aio.ServicerContext) -> bytes:
            answered: asyncio.Future[tuple[int, Any]] = loop.create_future()

            def answer(code: int, payload: Any) -> bool:
                answered.set_result((code, payload))
                return True

            metadata = dict(context.invocation_metadata() or ())
            service.handle(
                method, message, context.peer(), metadata.get("authorization"), metadata.get("x-api-key"), answer
            )
            code, payload = await answered
            if code:
                await context.abort(grpc.StatusCode[CODE_NAMES[code]], payload)
            return payload

        return grpc.unary_unary_rpc_method_handler(call)

    return grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {method: bridge(method) for method in METHODS}
    )


def ok_calls(state: ModelState) -> int:
    """ModelInfer calls answered OK so far, read from the metrics' text."""
    found = re.search(rb'modelstack_requests_total\{route="grpc_infer",status="200"\} (\d+)', state.metrics.render())
    return int(found.group(1)) if found else 0


async def main() -> None:
    config = ServingConfig.load()
    loop = asyncio.get_running_loop()
    state = ModelState(config)
    state.set_ready(load(config), loop)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handlers(InferenceService(state), loop),))
    port = server.add_insecure_port(f"{config.host}:{config.grpc_port or 0}")
    await server.start()
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"ok {ok_calls(state)}", flush=True))
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    try:  # the event loop the real server runs on, when installed
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
