"""Train the second example: a small convolutional network on scikit-learn's digits, upsampled
to 32x32 grey images (so nothing is downloaded), and write its data files.

    python -m modelprep.examples.digits_cnn stacks/digits-cnn

writes model/digits_cnn.keras, data/calibration.npz, data/evaluation.npz and data/train.npz
(the labelled training split, for pruning/clustering/QAT fine-tuning) under the folder.

The network does ~53 M multiply-adds per image (four 3x3 convolutions at 32x32 and 16x16),
so one float32 LiteRT inference costs milliseconds, not microseconds: int8's speed-up is
measurable beyond per-call overhead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from modelprep.examples.digits import fit_and_save, seeded
from modelprep.tf_env import tensorflow

SEED = 11
SIZE = 32


def upsample(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """8x8 digits in [0, 1] → size x size x 1, bilinear."""
    from scipy.ndimage import zoom

    factor = size / images.shape[1]
    out = np.stack([zoom(img, factor, order=1) for img in images])
    return np.clip(out, 0.0, 1.0)[..., np.newaxis].astype(np.float32)


def arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_eval, y_eval): the same 75/25 split as the digits MLP, as images."""
    from modelprep.examples.digits import digits_arrays

    x_train, y_train, x_eval, y_eval = digits_arrays()
    return upsample(x_train.reshape(-1, 8, 8)), y_train, upsample(x_eval.reshape(-1, 8, 8)), y_eval


def build() -> object:
    tensorflow()  # quiet TensorFlow before Keras imports it
    import keras

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(SIZE, SIZE, 1), name="image"),
            layers.Conv2D(48, 3, padding="same", activation="relu"),
            layers.Conv2D(48, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(96, 3, padding="same", activation="relu"),
            layers.Conv2D(96, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ],
        name="digits_cnn",
    )


def train(out_dir: str | Path, epochs: int = 8) -> Path:
    seeded(SEED)
    return fit_and_save(build(), out_dir, "digits_cnn", arrays(), epochs)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "stacks/digits-cnn")
    print(f"trained {train(target)}")
