"""Client errors and how they are shown: the 4xx/503 exception, JSON error bodies, values in messages."""

from __future__ import annotations

import json
from typing import Any

encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class ClientError(Exception):
    """A request problem answered with a 4xx/503 JSON error; ``close`` ends the connection."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        close: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = headers


def error_body(message: str) -> bytes:
    """``{"error": message}`` as JSON bytes."""
    return encode_json({"error": message}).encode()


def show(value: Any, limit: int = 80) -> str:
    """A value as JSON for an error message, cut to ``limit`` characters."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        value = value[:limit]  # the rest is cut below anyway: no need to encode megabytes first
    try:
        text = json.dumps(value, default=repr)
    except ValueError:  # an integer beyond Python's int-to-text limit
        text = "<a value with an integer too long to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the cut shown."""
    if len(text) <= limit:
        return text
    marker = f"... ({len(text) - limit} more characters cut)"
    return text[: max(limit - len(marker), 0)] + marker


def kind(value: Any) -> str:
    """What a JSON value is, for messages: "an array", "an object", "a string", or the value."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return show(value)
