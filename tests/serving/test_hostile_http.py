"""Issue 19's HTTP/1.1 findings, each attack over raw sockets against the real server (FakeRuntime).

Numbers are the issue's findings: 2 (body bytes counted as they arrive, not as declared), 4 (a
client that stops reading is timed out even with requests queued behind it; unsent answers
count against a cap with fair shares), 8 (bounded log lines, a really capped log buffer, no
blocking stderr) and 12 (a padded head refused on the first read).
"""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import FAKE_SERVER, MODEL, ServerProcess, make_config, rss_kib, server_env

PREDICT = f"/v1/models/{MODEL}:predict"
INFER = f"/v2/models/{MODEL}/infer"
BODY = b'{"instances": [[1, 2, 3, 4]]}'


def _post(path: str, body: bytes) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def _infer_with_id(size: int) -> bytes:
    """A V2 infer request whose ``id`` (echoed in the answer) is ``size`` bytes long."""
    body = json.dumps(
        {"id": "i" * size, "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    ).encode()
    return _post(INFER, body)


def _status(sock: socket.socket) -> int:
    """The status of the first answer on ``sock`` (0 when the server closed without one)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        data += chunk
    return int(data.split(b" ", 2)[1])


def _reset_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server resets the connection within ``timeout``, seen without reading from it
    (a client that reads is no longer one that does not)."""
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for _, events in poller.poll(left * 1000):
            if events & (select.POLLERR | select.POLLHUP):
                return True
    return False


def _reset_count(socks: list[socket.socket], timeout: float) -> int:
    """How many of ``socks`` the server resets within ``timeout``, all watched at once (one at a
    time, each client it keeps cost the whole timeout), without reading from them."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLERR | select.POLLHUP)
    reset: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(reset) < len(socks) and (left := deadline - time.monotonic()) > 0:
        for fd, events in poller.poll(left * 1000):
            if events & (select.POLLERR | select.POLLHUP):
                reset.add(fd)
                poller.unregister(fd)
    return len(reset)


def _non_reader(port: int) -> socket.socket:
    """A client with a tiny receive buffer that will not read what it is sent."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def test_2_declared_lengths_reserve_nothing(tmp_path: Path) -> None:
    # The issue: 16 heads declaring 4 MiB each, no body (1.2 KB in all), made every POST a 503 for
    # request_timeout_s. Bytes now count as they arrive: the heads hold nothing.
    config = make_config("fake.model", max_body_bytes=4 * 1024 * 1024, max_buffered_bytes=64 * 1024 * 1024)
    server = ServerProcess(config, tmp_path, FAKE_SERVER)
    held: list[socket.socket] = []
    try:
        server.wait_for("ready")
        head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n".encode()
        for _ in range(16):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(head)
            held.append(sock)
        time.sleep(0.3)
        for _ in range(5):
            assert server.request("POST", PREDICT, BODY)[0] == 200
    finally:
        for sock in held:
            sock.close()
        assert server.stop() == 0


def test_4_a_non_reading_client_with_a_request_queued_is_timed_out(tmp_path: Path) -> None:
    # The issue: expire() returned early while requests were queued, so a client that stopped
    # reading with one more request pipelined held its answers past any idle timeout.
    config = make_config("fake.model", max_body_bytes=2 * 1024 * 1024, idle_timeout_s=2.0)
    server = ServerProcess(config, tmp_path, FAKE_SERVER)
    try:
        server.wait_for("ready")
        sock = _non_reader(server.port)
        rows = b"[" + b",".join([b"[1,2,3,4]"] * 200_000) + b"]"  # 1.8 MB asking for a ~10 MB answer
        sock.sendall(_post(PREDICT, b'{"instances": ' + rows + b"}") + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1.0)
        started = time.monotonic()
        # Cut off within idle_timeout_s (+ the 1 s sweep) of its last progress, with answers queued.
        assert _reset_by_server(sock, timeout=6.0), "the non-reading client was never timed out"
        assert time.monotonic() - started < 6.0
        sock.close()
        assert server.request("GET", "/healthz")[0] == 200
    finally:
        assert server.stop() == 0


def test_4_unsent_answers_are_capped_and_the_largest_holders_give_way(tmp_path: Path) -> None:
    # 16 clients each ask for a ~3.5 MB answer (100,000 rows) and never read it: past what the
    # kernel takes (~2.9 MB a socket here) each kept the rest in the server's memory until the idle
    # timeout, with no cap on the total. Here 1.5 MiB for all unsent answers: a client over its
    # share is cut (reset) at once, and a client that reads keeps being served beside them.
    limit = 1536 * 1024
    config = make_config("fake.model", max_body_bytes=limit, max_buffered_bytes=limit)
    server = ServerProcess(config, tmp_path, FAKE_SERVER)
    clients: list[socket.socket] = []
    try:
        server.wait_for("ready")
        rows = b"[" + b",".join([b"[1,2,3,4]"] * 100_000) + b"]"
        request = _post(PREDICT, b'{"instances": ' + rows + b"}") + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(16):
            sock = _non_reader(server.port)
            sock.sendall(request)
            clients.append(sock)
            assert server.request("POST", PREDICT, BODY)[0] == 200  # beside the attack
        cut = _reset_count(clients, timeout=1.0)
        assert cut >= 12, f"only {cut} of 16 non-reading clients were cut"
    finally:
        for sock in clients:
            sock.close()
        assert server.stop() == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server in its default config, for the tests that need no other (one start, not one each)."""
    server = ServerProcess(make_config("fake.model"), tmp_path_factory.mktemp("hostile-http"), FAKE_SERVER)
    try:
        server.wait_for("ready")
        yield server
    finally:
        assert server.stop() == 0


def test_12_a_padded_head_in_one_segment_is_refused(server: ServerProcess) -> None:
    # The issue: the padding check skipped the first read, so a 130 KB head padded with spaces
    # arriving in one segment got 200 despite the 64 KiB head limit (padding counts toward 2x).
    for size in (150_000, 200_000):
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b" " * size + b"v\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head)
            assert _status(sock) == 431
    # A request after a complete one in the same segment is measured the same way.
    pipelined = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + head
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(pipelined)
        answers = b""
        while chunk := sock.recv(65536):
            answers += chunk
    assert answers.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 431" in answers
    assert server.request("GET", "/healthz")[0] == 200


def test_fair_shares_cut_the_largest_holders_and_only_for_a_holder_within_its_share() -> None:
    from serving.shares import make_room

    holders = [("a", 40), ("b", 30), ("c", 5)]  # and 15 more held that no cut gives back
    assert make_room(100, 90, 0, 10, holders) == []  # fits
    assert make_room(100, 90, 0, 20, holders) == ["a"]  # within its share (25): the largest gives way
    assert make_room(100, 120, 0, 25, [("a", 30), ("b", 30)], floor=50) == ["a", "b"]
    assert make_room(100, 90, 5, 21, holders) is None  # 26 > its share of 25: it gives way itself
    assert make_room(100, 95, 0, 10, [("a", 5), ("b", 5)], floor=50) is None  # nobody holds more than it


# --- 8: logging ---------------------------------------------------------------------------------------


def test_8a_a_long_target_is_cut_in_the_access_log_with_the_cut_shown(server: ServerProcess) -> None:
    # The issue: the whole target (up to 64 KiB) went into every access-log line, 120 MB in 0.5 s.
    target = "/healthz?" + "x" * 60_000
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert _status(sock) == 200
    time.sleep(0.3)
    [line] = [r for r in server.records() if r.get("event") == "request" and r["path"].startswith("/healthz?")]
    assert len(line["path"]) < 300 and line["path"].endswith(f"...[+{len(target) - 256} chars]"), line["path"]


def _stalled_log_server(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """The fake server with its stderr a pipe nobody reads (a stalled log reader); (process, port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = tmp_path / "serving.json"
    config.write_text(json.dumps(make_config("fake.model", port=port)))
    full_env = {**server_env(), "MODELSTACK_SERVING_CONFIG": str(config), **(env or {})}
    proc = subprocess.Popen(FAKE_SERVER, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                if _status(sock) == 200:
                    return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def _pipelined(port: int, requests: list[bytes], batch: int = 200) -> int:
    """Send ``requests`` on one connection, ``batch`` at a time, reading every answer; the 200s."""
    ok = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for start in range(0, len(requests), batch):
            part = requests[start : start + batch]
            sock.sendall(b"".join(part))
            for _ in part:
                status = int(reader.readline().split()[1])
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
                ok += status == 200
    return ok


def _stop_stalled(proc: subprocess.Popen[bytes]) -> bytes:
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    rest = proc.stderr.read()  # let it write the rest and exit
    assert proc.wait(timeout=15) == 0
    return rest


def test_8b_the_log_buffer_is_capped_while_the_reader_stalls_and_drops_are_counted(tmp_path: Path) -> None:
    # The issue: with the reader stalled, every line moved from the capped buffer into an uncapped
    # one each 10 ms: 56 -> 261 MB after 3,000 requests with long targets.
    proc, port = _stalled_log_server(tmp_path)
    try:
        rss_before = rss_kib(proc.pid)
        long_targets = [f"GET /healthz?{'x' * 60_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()] * 3000
        assert _pipelined(port, long_targets, batch=50) == 3000
        short = [f"GET /healthz?{'y' * 250} HTTP/1.1\r\nHost: x\r\n\r\n".encode()] * 30_000
        assert _pipelined(port, short) == 30_000  # about 12 MB of lines: more than the buffer holds
        grown_mib = (rss_kib(proc.pid) - rss_before) / 1024
        assert grown_mib < 40, f"server memory grew by {grown_mib:.0f} MiB"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            metrics = b""
            while chunk := sock.recv(65536):
                metrics += chunk
        [dropped] = [
            line for line in metrics.decode().splitlines() if line.startswith("modelstack_log_lines_dropped_total ")
        ]
        assert int(dropped.split()[1]) > 1000, dropped
    finally:
        rest = _stop_stalled(proc)
    assert b'"log_lines_dropped"' in rest


def test_8c_a_warning_printed_on_the_request_path_never_waits_for_the_log_reader(tmp_path: Path) -> None:
    # The issue: numpy's RuntimeWarning went straight to stderr; with the pipe full, the write
    # blocked the loop and HTTP, /healthz and gRPC all stalled until the reader resumed.
    proc, port = _stalled_log_server(tmp_path, env={"FAKE_WARN": "1"})
    try:
        predict = _post(PREDICT, BODY)
        started = time.monotonic()
        assert _pipelined(port, [predict] * 3000) == 3000  # ~3,000 warnings: many times a pipe's capacity
        assert time.monotonic() - started < 20
    finally:
        rest = _stop_stalled(proc)
    assert b'"event":"stderr"' in rest and b"RuntimeWarning" in rest
