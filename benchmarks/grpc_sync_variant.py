"""The gRPC service on the synchronous grpcio server (a thread pool), for benchmarks/v2_bench.py to compare with grpc.aio.

    MODELSTACK_SERVING_CONFIG=serving.json python benchmarks/grpc_sync_variant.py THREADS

Everything but the gRPC server is the real server's: the config, the model loading, the state,
the batcher on an asyncio loop, and the same ``InferenceService`` handlers. Each pool thread
hands its call to the loop (``run_coroutine_threadsafe``) and waits for the answer, which is what
a synchronous server must do to share the loop's batcher. Only ``ModelInfer`` and the health RPCs
are bridged; the script prints ``ready PORT``, then ``ok N`` (ModelInfer calls answered OK so
far, from the metrics) on each SIGUSR1, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from serving.config import ServingConfig  # noqa: E402
from serving.grpc_service import InferenceService  # noqa: E402
from serving.loading import load_model  # noqa: E402
from serving.proto import grpc_service_pb2_grpc as pb_grpc  # noqa: E402
from serving.state import ModelState  # noqa: E402


class Bridge(pb_grpc.GRPCInferenceServiceServicer):
    """Runs each call's coroutine on the loop from a pool thread and waits for its answer."""

    def __init__(self, service: InferenceService, loop: asyncio.AbstractEventLoop) -> None:
        self.service, self.loop = service, loop

    def _run(self, method: Any, request: Any, context: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(method(request, context), self.loop).result()

    def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802 - the protocol's name
        return self._run(self.service.ModelInfer, request, context)

    def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._run(self.service.ServerReady, request, context)


def ok_calls(state: ModelState) -> int:
    """ModelInfer calls answered OK so far, read from the metrics' text."""
    found = re.search(rb'modelstack_requests_total\{route="grpc_infer",status="200"\} (\d+)', state.metrics.render())
    return int(found.group(1)) if found else 0


async def main(threads: int) -> None:
    config = ServingConfig.load()
    loop = asyncio.get_running_loop()
    state = ModelState(config)
    model, _, sample_cost_s = load_model(config)
    state.set_ready(model, loop, sample_cost_s)
    server = grpc.server(ThreadPoolExecutor(threads), options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Bridge(InferenceService(state), loop), server)
    port = server.add_insecure_port(f"{config.host}:{config.grpc_port or 0}")
    server.start()
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"ok {ok_calls(state)}", flush=True))
    await stop.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    try:  # the event loop the real server runs on, when installed
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 16))
