"""What every family's measuring shares: sizes, output digests, sample batches for the latency loops."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import numpy as np


def outputs_sha256(outputs: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(outputs, dtype=np.float32).tobytes()).hexdigest()


def npy_bytes(outputs: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(outputs, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def samples(x: np.ndarray, n: int) -> np.ndarray:
    reps = int(np.ceil(n / len(x)))
    return np.concatenate([x] * reps)[:n] if reps > 1 else x[:n]


def gzip_len(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def path_bytes(path: str) -> tuple[int, int]:
    """(bytes, gzipped bytes) of a model file or SavedModel directory."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    data = b"".join(f.read_bytes() for f in files)
    return len(data), gzip_len(data)
