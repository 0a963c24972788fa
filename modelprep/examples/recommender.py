"""Train the example recommender (user id, item id -> score) on seeded synthetic ratings and write its data files.

    python -m modelprep.examples.recommender stacks/recommender

writes model/recommender.keras, data/calibration.npz and data/evaluation.npz (one array per input
name, ``user_id`` and ``item_id``, and ``y`` the score) under the folder. The ratings come from
hidden user and item factors plus noise, so the model can learn them; the metric is ``mae``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

SEED = 11
USERS, ITEMS, FACTORS = 200, 300, 4


def ratings(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user ids, item ids, scores): scores from hidden factors and biases, plus a little noise."""
    rng = np.random.default_rng(SEED)
    user_factors = rng.normal(size=(USERS, FACTORS)).astype(np.float32)
    item_factors = rng.normal(size=(ITEMS, FACTORS)).astype(np.float32)
    item_bias = rng.normal(scale=0.5, size=ITEMS).astype(np.float32)
    draw = np.random.default_rng(seed)
    users = draw.integers(0, USERS, n).astype(np.int32)
    items = draw.integers(0, ITEMS, n).astype(np.int32)
    score = (user_factors[users] * item_factors[items]).sum(axis=1) / 2 + item_bias[items] + 3.0
    score += draw.normal(scale=0.1, size=n).astype(np.float32)
    return users[:, None], items[:, None], score.astype(np.float32)[:, None]


def build() -> Any:
    """Embeddings for users and items, their dot product, an item bias and a small MLP on the pair."""
    import keras

    user = keras.Input(shape=(1,), dtype="int32", name="user_id")
    item = keras.Input(shape=(1,), dtype="int32", name="item_id")
    user_vector = keras.layers.Flatten()(keras.layers.Embedding(USERS, 8)(user))
    item_vector = keras.layers.Flatten()(keras.layers.Embedding(ITEMS, 8)(item))
    item_bias = keras.layers.Flatten()(keras.layers.Embedding(ITEMS, 1)(item))
    dot = keras.layers.Dot(axes=1)([user_vector, item_vector])
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([user_vector, item_vector]))
    score = keras.layers.Add()([dot, item_bias, keras.layers.Dense(1)(hidden)])
    score = keras.layers.Rescaling(1.0, offset=3.0, name="score")(score)
    return keras.Model({"user_id": user, "item_id": item}, score, name="recommender")


def train(out_dir: str | Path, epochs: int = 25) -> Path:
    """Train and write model/recommender.keras and the data files; returns the model path."""
    import keras

    from modelprep.examples.digits import seeded

    seeded(SEED)
    users, items, score = ratings(40_000)
    eval_users, eval_items, eval_score = ratings(2_000, seed=SEED + 1)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse", metrics=["mae"])
    model.fit({"user_id": users, "item_id": items}, score, epochs=epochs, batch_size=256, verbose=0)
    out = Path(out_dir)
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(parents=True, exist_ok=True)
    path = out / "model" / "recommender.keras"
    model.save(path)
    np.savez(out / "data" / "calibration.npz", user_id=users[:300], item_id=items[:300])
    np.savez(out / "data" / "evaluation.npz", user_id=eval_users, item_id=eval_items, y=eval_score)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "stacks/recommender")
    print(train(target))
