"""Train the example digits classifier (scikit-learn's 8x8 digits) and write its data files.

    python -m modelprep.examples.digits stacks/digits

writes model/digits.keras, data/calibration.npz, data/evaluation.npz and data/train.npz under the folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from modelprep.tf_env import tensorflow

SEED = 7


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 1,797 digits split 75/25, scaled to [0, 1], as (x_train, y_train, x_eval, y_eval)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return x_train, y_train, x_eval, y_eval


def train(out_dir: str | Path, epochs: int = 40) -> Path:
    """Train the 64-256-256-10 MLP; returns the model path."""
    tf = tensorflow()
    import keras

    out = Path(out_dir)
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_eval, y_eval = digits_arrays()

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    model = keras.Sequential(
        [
            keras.Input(shape=(64,), name="pixels"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="digits",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    path = out / "model" / "digits.keras"
    model.save(path)
    np.savez(out / "data" / "calibration.npz", x=x_train[:300])
    np.savez(out / "data" / "evaluation.npz", x=x_eval, y=y_eval)
    np.savez(out / "data" / "train.npz", x=x_train, y=y_train)  # labelled data for pruning/QAT fine-tuning
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "stacks/digits")
    print(f"trained {train(target)}")
