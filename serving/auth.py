"""The optional API key: read from the environment at start-up, checked on every route that is not a probe."""

from __future__ import annotations

import hmac
import os

from serving.config import ServingConfig
from serving.errors import ClientError
from serving.messages import Headers

_WRONG_KEY = "missing or wrong API key; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def read_api_key(config: ServingConfig) -> str | None:
    """The API key from the environment, or None when the config enables none.

    Raises ValueError when the config names a variable that is unset or empty: a server meant
    to require a key must not start without one.
    """
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env, "")
    if not key.strip():
        raise ValueError(
            f"api_key_env: the environment variable {config.api_key_env} is unset or empty; "
            "set it to the API key clients must send"
        )
    return key.strip()


def check_api_key(headers: Headers, expected: bytes | None) -> None:
    """401 unless the request carries the key (``Authorization: Bearer`` or ``X-API-Key``)."""
    if expected is None:
        return
    sent = headers.get("x-api-key")
    if not sent:
        scheme, _, credentials = headers.get("authorization").partition(" ")
        sent = credentials.strip() if scheme.lower() == "bearer" else ""
    # compare_digest: the comparison takes the same time wherever the first difference is.
    if not sent or not hmac.compare_digest(sent.encode("latin-1", "replace"), expected):
        raise ClientError(401, _WRONG_KEY, headers=(("WWW-Authenticate", 'Bearer realm="modelstack"'),))
