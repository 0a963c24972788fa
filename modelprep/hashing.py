"""Content hashes: the cache keys and the model pin are built from bytes, never from paths."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and bytes, sorted)."""
    path = Path(path)
    if path.is_dir():
        return tree_sha256({c.relative_to(path).as_posix(): file_sha256(c) for c in path.rglob("*") if c.is_file()})
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(files: Mapping[str, str]) -> str:
    """sha256 of a folder from its files' sha256s by relative name: `file_sha256` of a folder holding
    them, computable before the folder is written (a family states the sha of what it will ship)."""
    digest = hashlib.sha256()
    for name in sorted(files, key=PurePosixPath):
        digest.update(name.encode() + b"\0")
        digest.update(files[name].encode())
    return digest.hexdigest()


def json_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
