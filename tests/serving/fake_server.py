"""The real model server with FakeRuntime in place of LiteRT: HTTP tests without model files or TensorFlow.

``FAKE_LOAD_DELAY_S`` makes loading take that long (for start-up and shutdown tests);
``FAKE_EVENT_LOOP=asyncio`` runs the standard library's loop instead of uvloop;
``FAKE_WARN=1`` makes every inference print numpy's RuntimeWarning (to stderr, on the request path).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if os.environ.get("FAKE_EVENT_LOOP") == "asyncio":
    sys.modules["uvloop"] = None  # type: ignore[assignment]  # makes `import uvloop` fail

from serving_support import FakeRecommender, FakeRuntime, FakeTextRuntime  # noqa: E402

import serving.loading  # noqa: E402
from serving.lifecycle import main  # noqa: E402


def _load_fake(config: object) -> FakeRuntime | FakeRecommender | FakeTextRuntime:
    time.sleep(float(os.environ.get("FAKE_LOAD_DELAY_S", "0")))
    inputs = getattr(config, "inputs", ())
    if len(inputs) > 1:  # several inputs: the fake recommender
        return FakeRecommender()
    if inputs and inputs[0].dtype == "string":  # texts: each text's length
        return FakeTextRuntime()
    return FakeRuntime()


serving.loading.load_runtime = _load_fake  # type: ignore[assignment]

if os.environ.get("FAKE_WARN"):
    import warnings

    import numpy as np

    warnings.simplefilter("always")
    _predict = FakeRuntime.predict

    def _warning_predict(self: FakeRuntime, batch: np.ndarray) -> np.ndarray:
        np.float32(3e38) * np.float32(10)  # overflow: numpy prints a RuntimeWarning to sys.stderr
        return _predict(self, batch)

    FakeRuntime.predict = _warning_predict  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
