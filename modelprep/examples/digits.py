"""Train the example digits classifier (scikit-learn's 8x8 digits) and write its data files.

    python -m modelprep.examples.digits stacks/digits

writes model/digits.keras, data/calibration.npz, data/evaluation.npz and data/train.npz under the folder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from modelprep.tf_env import tensorflow

SEED = 7
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def digits_arrays() -> Arrays:
    """The 1,797 digits split 75/25, scaled to [0, 1], as (x_train, y_train, x_eval, y_eval)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return x_train, y_train, x_eval, y_eval


def fit_and_save(model: Any, out_dir: str | Path, name: str, arrays: Arrays, epochs: int) -> Path:
    """Train a classifier and write what a stack folder needs: model/<name>.keras and the data
    files (calibration, evaluation, and the labelled training split for fine-tuning)."""
    import keras

    x_train, y_train, x_eval, y_eval = arrays
    out = Path(out_dir)
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(parents=True, exist_ok=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    path = out / "model" / f"{name}.keras"
    model.save(path)
    np.savez(out / "data" / "calibration.npz", x=x_train[:300])
    np.savez(out / "data" / "evaluation.npz", x=x_eval, y=y_eval)
    np.savez(out / "data" / "train.npz", x=x_train, y=y_train)
    return path


def seeded(seed: int) -> None:
    """Same seed, same deterministic ops: the same model on every run of a machine."""
    tf = tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(out_dir: str | Path, epochs: int = 40) -> Path:
    """Train the 64-256-256-10 MLP; returns the model path."""
    import keras

    seeded(SEED)
    model = keras.Sequential(
        [
            keras.Input(shape=(64,), name="pixels"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="digits",
    )
    return fit_and_save(model, out_dir, "digits", digits_arrays(), epochs)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "stacks/digits")
    print(f"trained {train(target)}")
