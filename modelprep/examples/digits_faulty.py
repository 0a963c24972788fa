"""Faulty retrains of the digits classifier, for rollout tests, `make canary-demo` and the rollout
safety benchmark: models that load, pass a warm-up on zeros and answer, but are not the model serving.

    python -m modelprep.examples.digits_faulty shuffled FOLDER   # model/digits-shuffled.keras
    python -m modelprep.examples.digits_faulty exploded FOLDER   # model/digits-exploded.keras

- `shuffled`: the same network trained on the digits with their labels shuffled: 200 OK, same
  signature, wrong predictions (about one in ten right).
- `exploded`: the trained network with its first layer's weights blown up (a diverged retrain): zeros
  still give finite outputs, real pixels give NaN, which the server answers with a 500.

Only the model file is written: the folder's data files (those of the model serving) stay as they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from modelprep.examples.digits import SEED, digits_arrays, seeded


def _network():  # type: ignore[no-untyped-def]
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=(64,), name="pixels"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="digits",
    )


def _fit(y_of: str, epochs: int) -> object:
    import keras

    seeded(SEED)
    x_train, y_train, _, _ = digits_arrays()
    if y_of == "shuffled":
        y_train = np.random.default_rng(SEED).permutation(y_train)
    model = _network()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def shuffled(folder: str | Path, epochs: int = 40) -> Path:
    """model/digits-shuffled.keras: trained on shuffled labels."""
    model = _fit("shuffled", epochs)
    path = Path(folder) / "model" / "digits-shuffled.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)  # type: ignore[attr-defined]
    return path


def exploded(folder: str | Path, epochs: int = 10) -> Path:
    """model/digits-exploded.keras: the first layer's weights blown up to +-3e38 (near float32's largest), so
    lit pixels overflow to +-inf and the next layer's sums of both give NaN; zeros still give zeros."""
    model = _fit("true", epochs)
    first = model.layers[0]  # type: ignore[attr-defined]
    kernel, bias = first.get_weights()
    first.set_weights([np.sign(kernel).astype(np.float32) * np.float32(3e38), np.zeros_like(bias)])
    path = Path(folder) / "model" / "digits-exploded.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)  # type: ignore[attr-defined]
    return path


if __name__ == "__main__":
    kind, target = sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "stacks/digits")
    print(f"trained {({'shuffled': shuffled, 'exploded': exploded}[kind])(target)}")
