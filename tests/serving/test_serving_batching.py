"""Dynamic batching: the batcher on its own, and a batching server under concurrent load.

Every caller must get exactly its own rows back, equal to a direct single-sample inference, and
SIGTERM must let queued requests finish.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serving_support import FAKE_SERVER, MODEL, ServerProcess, make_config

from serving.batching import Batcher, settle
from serving.config import ServingConfig
from serving.loading import warm_up_sizes

# --- the batcher alone -------------------------------------------------------------------------------


class _Recorder:
    """A fake model: output row = input row * 2, with the batch sizes it was called with."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay = delay

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.append(len(batch))
        time.sleep(self.delay)
        return batch * 2


async def _infer(batcher: Batcher, rows: np.ndarray) -> np.ndarray:
    """``submit`` as a coroutine: the output for ``rows``."""
    future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
    batcher.submit(rows, lambda output, error: settle(future, output, error))
    return await future


def _run(coro_fn: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await coro_fn(asyncio.get_running_loop())

    asyncio.run(main())


# offload=True: the model runs on the inference thread (a model slower than a hand-off).
MODES = pytest.mark.parametrize("sample_cost_s", [None, 1.0], ids=["on-loop", "on-thread"])


@MODES
def test_batcher_gives_every_caller_its_own_rows(sample_cost_s: float | None) -> None:
    model = _Recorder(delay=0.002)
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(int(rng.integers(1, 4)), 3)).astype(np.float32) for _ in range(200)]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        batcher = Batcher(loop, model, max_batch_size=8, max_latency_ms=5, sample_cost_s=sample_cost_s)

        async def call(i: int) -> np.ndarray:
            await asyncio.sleep(i % 7 * 0.001)  # arrivals spread over a few milliseconds
            return await _infer(batcher, requests[i])

        results = await asyncio.gather(*(call(i) for i in range(len(requests))))
        await batcher.drain()
        batcher.close()
        for rows, result in zip(requests, results):
            np.testing.assert_array_equal(result, rows * 2)

    _run(scenario)
    assert sum(model.sizes) == sum(len(r) for r in requests)
    assert max(model.sizes) <= 8 and max(model.sizes) > 1  # batches formed, never over the limit


@MODES
def test_requests_read_in_one_pass_run_as_one_batch(sample_cost_s: float | None) -> None:
    """With max_latency_ms 0 nothing waits, yet what arrived together runs together."""
    batched, unbatched = _Recorder(), _Recorder()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        for model, size in ((batched, 8), (unbatched, 1)):
            batcher = Batcher(loop, model, max_batch_size=size, max_latency_ms=0, sample_cost_s=sample_cost_s)
            rows = [np.full((1, 2), i, np.float32) for i in range(10)]
            results = await asyncio.gather(*(_infer(batcher, r) for r in rows))
            assert [int(r[0, 0]) for r in results] == [2 * i for i in range(10)]
            batcher.close()

    _run(scenario)
    assert batched.sizes in ([8, 2], [1, 8, 1]) and unbatched.sizes == [1] * 10


def test_batcher_waits_at_most_max_latency_and_runs_big_requests_alone() -> None:
    model = _Recorder()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        batcher = Batcher(loop, model, max_batch_size=4, max_latency_ms=250)
        started = time.perf_counter()
        np.testing.assert_array_equal(await _infer(batcher, np.ones((1, 2))), np.full((1, 2), 2.0))
        waited = time.perf_counter() - started
        assert 0.24 <= waited < 2.0  # a lone request waits for company, but not forever
        started = time.perf_counter()
        assert (await _infer(batcher, np.ones((9, 2)))).shape == (9, 2)  # over max_batch_size: alone
        assert time.perf_counter() - started < 0.2  # a full batch does not wait the 250 ms
        small = asyncio.ensure_future(_infer(batcher, np.ones((1, 2))))
        await asyncio.sleep(0.01)
        full = await asyncio.gather(*(_infer(batcher, np.ones((1, 2))) for _ in range(3)))
        assert len(full) == 3 and small.done()  # the batch filled up: it ran before its window closed
        assert time.perf_counter() - started < 0.2

    _run(scenario)
    assert model.sizes == [1, 9, 4]


@MODES
def test_a_request_that_breaks_the_model_fails_alone(sample_cost_s: float | None) -> None:
    """A batch that fails runs again request by request: only the request whose rows break the
    model gets the error; a failing batch of one request is not run twice."""
    calls: list[int] = []

    def picky(batch: np.ndarray) -> np.ndarray:  # like an embedding lookup given an unknown id
        calls.append(len(batch))
        if (batch < 0).any():
            raise IndexError("id out of range")
        return batch * 2

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        batcher = Batcher(loop, picky, max_batch_size=8, max_latency_ms=0, sample_cost_s=sample_cost_s)
        sent = [np.full((1, 1), 1.0), np.full((2, 1), 2.0), np.full((1, 1), -1.0), np.full((1, 1), 3.0)]
        outcomes = await asyncio.gather(*(_infer(batcher, rows) for rows in sent), return_exceptions=True)
        assert isinstance(outcomes[2], IndexError) and str(outcomes[2]) == "id out of range"
        for rows, outcome in zip(sent[:2] + sent[3:], outcomes[:2] + outcomes[3:]):
            np.testing.assert_array_equal(outcome, rows * 2)
        with pytest.raises(IndexError):
            await _infer(batcher, np.full((1, 1), -5.0))
        np.testing.assert_array_equal(await _infer(batcher, np.ones((2, 1))), np.full((2, 1), 2.0))
        await batcher.drain()
        batcher.close()

    _run(scenario)
    assert calls == [5, 1, 2, 1, 1, 1, 2]  # the batch, its 4 requests alone, the lone bad one, a good one


def test_warm_up_sizes_cover_every_bucket() -> None:
    base = {"model_name": "m", "artifact": "a.tflite", "inputs": [{"name": "x", "shape": [1], "dtype": "float32"}]}
    assert warm_up_sizes(ServingConfig.from_dict(base)) == (1,)
    assert warm_up_sizes(ServingConfig.from_dict({**base, "max_batch_size": 0})) == (1,)
    assert warm_up_sizes(ServingConfig.from_dict({**base, "max_batch_size": 12})) == (1, 2, 4, 8, 12)


@pytest.mark.tf
def test_litert_buckets_pad_and_match_single_sample_inference(tflite_models: dict[str, Path]) -> None:
    from serving.runtime import LiteRTModel

    for variant in ("float32", "int8"):
        model = LiteRTModel(tflite_models[variant], num_threads=1, max_bucket=8)
        rows = np.random.default_rng(1).normal(size=(21, 4)).astype(np.float32)
        singles = np.concatenate([model.predict(rows[i : i + 1]) for i in range(len(rows))])
        for n in (1, 2, 3, 5, 8, 13, 21):  # padded buckets and chunks over the largest bucket
            np.testing.assert_allclose(model.predict(rows[:n]), singles[:n], rtol=1e-6, atol=1e-6)


# --- a batching server under load ------------------------------------------------------------------


def _post(port: int, body: bytes, path: str = f"/v1/models/{MODEL}:predict") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.tf
@pytest.mark.parametrize(("variant", "max_latency_ms"), [("float32", 3), ("int8", 0)])
def test_concurrent_callers_get_their_own_results(
    variant: str, max_latency_ms: float, tflite_models: dict[str, Path], tmp_path: Path
) -> None:
    artifact = tflite_models[variant]
    server = ServerProcess(make_config(artifact, max_batch_size=16, max_latency_ms=max_latency_ms), tmp_path)
    try:
        server.wait_for("ready")
        rng = np.random.default_rng(11)
        requests = [rng.normal(size=(int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(240)]
        from serving.runtime import LiteRTModel

        direct = LiteRTModel(artifact, num_threads=1)  # single-sample inference, no batching
        expected = [np.concatenate([direct.predict(rows[i : i + 1]) for i in range(len(rows))]) for rows in requests]

        def call(i: int) -> tuple[int, dict]:
            rows = requests[i].tolist()
            if i % 2:
                body = {"instances": rows}
                return _post(server.port, json.dumps(body).encode())
            body = {
                "id": str(i),
                "inputs": [{"name": "features", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}],
            }
            return _post(server.port, json.dumps(body).encode(), f"/v2/models/{MODEL}/infer")

        with ThreadPoolExecutor(max_workers=48) as pool:
            results = list(pool.map(call, range(len(requests))))
        for i, (status, doc) in enumerate(results):
            assert status == 200, doc
            if i % 2:
                got = np.array(doc["predictions"])
            else:
                assert doc["id"] == str(i)
                got = np.array(doc["outputs"][0]["data"]).reshape(doc["outputs"][0]["shape"])
            np.testing.assert_allclose(got, expected[i], rtol=1e-5, atol=1e-6, err_msg=f"request {i}")

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
        values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
        invocations = float(values["modelstack_batch_size_count"])
        samples = float(values["modelstack_batch_size_sum"])
        # Warm-up runs are not counted; the request rows all are, in fewer invocations.
        assert samples == sum(len(r) for r in requests)
        assert invocations <= len(requests)
        assert invocations < len(requests)  # 48 clients at once: batches formed
    finally:
        assert server.stop() == 0


def test_sigterm_lets_queued_batch_requests_finish(tmp_path: Path) -> None:
    # A long batching window keeps the requests queued while SIGTERM arrives.
    server = ServerProcess(make_config("fake.model", max_batch_size=64, max_latency_ms=600), tmp_path, FAKE_SERVER)
    server.wait_for("ready")
    body = json.dumps({"instances": [[1, 2, 3, 4]]}).encode()
    results: list[tuple[int, dict]] = []
    threads = [threading.Thread(target=lambda: results.append(_post(server.port, body))) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.25)
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for("draining")
    for thread in threads:
        thread.join(timeout=10)
    assert [status for status, _ in results] == [200] * 6
    assert all(len(doc["predictions"]) == 1 for _, doc in results)
    assert server.proc.wait(timeout=10) == 0
    assert server.wait_for("stopped")["drained"] is True
