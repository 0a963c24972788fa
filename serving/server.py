"""Entry point of the serving image: ``python -m serving.server`` serves the configured model.

The pieces: ``serving.listener`` (the socket, shared caps, drain), ``serving.http1`` (one
connection: parsing, framing, per-request limits), ``serving.app`` and
``serving.routes`` (dispatch), ``serving.families`` / ``serving.family`` (the task's runtime and routes;
``serving.predict`` for V1/V2), ``serving.v1`` / ``serving.v2`` (the two
protocols), ``serving.tensors`` (JSON to numpy), ``serving.lifecycle`` (start-up, readiness,
drain), ``serving.loading`` (the model), ``serving.batching`` (dynamic batching). The config
path comes from ``$MODELSTACK_SERVING_CONFIG`` (default ``/app/serving.json``); port 0 binds an
ephemeral port, reported in the "listening" log line.
"""

from __future__ import annotations

import sys

from serving.lifecycle import main

if __name__ == "__main__":
    sys.exit(main())
