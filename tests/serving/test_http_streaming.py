"""Streamed answers (``Response.stream``): chunked encoding, flow control, a client that leaves.

An in-process ``HttpServer`` with a small app whose one route streams, over raw sockets.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from serving_support import make_config

from serving.messages import Request, Response


class StreamingApp:
    """``GET /n/<count>``: ``count`` chunks of 1 KiB (0: endless 1 MiB chunks)."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed = threading.Event()
        self.statuses: list[int] = []

    def handle(self, request: Request, conn: Any) -> None:
        count = int(request.path.rsplit("/", 1)[1])

        async def chunks() -> AsyncIterator[bytes]:
            try:
                i = 0
                while count == 0 or i < count:
                    await asyncio.sleep(0)
                    self.produced += 1
                    yield (b"%d;" % i).ljust(1024 if count else 1 << 20, b".")
                    i += 1
            finally:
                self.closed.set()

        conn.send(request, Response(200, b"", b"text/event-stream", stream=chunks()))

    def record(self, request: Request, status: int, remote: str) -> None:
        self.statuses.append(status)


@contextmanager
def streaming_server(tmp_path: Path) -> Iterator[tuple[int, StreamingApp]]:
    from serving.config import ServingConfig
    from serving.listener import HttpServer

    app = StreamingApp()
    config = ServingConfig.from_dict(make_config(tmp_path / "none.tflite"))
    server = HttpServer(("127.0.0.1", 0), app, config)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=5)
    try:
        yield server.address[1], app
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(timeout=2), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)


def _read_chunked(reader: Any) -> list[bytes]:
    chunks = []
    while True:
        size = int(reader.readline().strip(), 16)
        data = reader.read(size + 2)[:-2]
        if size == 0:
            return chunks
        chunks.append(data)


def test_a_streamed_answer_is_chunked_and_the_connection_goes_on(tmp_path: Path) -> None:
    with streaming_server(tmp_path) as (port, app), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        for _ in range(2):  # keep-alive: the next request after the stream's end
            sock.sendall(b"GET /n/5 HTTP/1.1\r\nHost: x\r\n\r\n")
            head = []
            while (line := reader.readline()) != b"\r\n":
                head.append(line.lower())
            assert head[0].startswith(b"http/1.1 200") and b"transfer-encoding: chunked\r\n" in head
            assert not any(h.startswith(b"content-length") for h in head)
            chunks = _read_chunked(reader)
            assert [c.split(b";")[0] for c in chunks] == [b"0", b"1", b"2", b"3", b"4"]
        time.sleep(0.1)
        assert app.statuses == [200, 200]


def test_a_client_that_does_not_read_pauses_the_stream_and_one_that_leaves_closes_it(tmp_path: Path) -> None:
    with streaming_server(tmp_path) as (port, app):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /n/0 HTTP/1.1\r\nHost: x\r\n\r\n")  # endless 1 MiB chunks, never read
        time.sleep(1.0)
        produced = app.produced
        time.sleep(0.5)
        assert app.produced == produced and produced <= 8, produced  # paused: held to what the socket takes
        sock.close()
        assert app.closed.wait(5), "the iterator was not closed when the client left"
        time.sleep(0.1)
        assert app.statuses == [499]
