"""A batch for a model with several named inputs: one numpy structured array, a field per input.

``batch["user_id"]`` is that input's ``(n, *shape)`` tensor, so the batcher concatenates and
splits such a batch like any array. The binding step (``serving.request``) makes batches with ``pack``;
the runtimes (``serving.multi_runtime``) and prep's measuring read them back with ``unpack``.
Apart from both so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving.config import InputSpec


def feeds_dtype(inputs: Sequence[InputSpec]) -> np.dtype[Any]:
    """The structured dtype of a batch: one field per input, with its sample shape."""
    return np.dtype([(spec.name, np.dtype(spec.dtype), tuple(spec.shape)) for spec in inputs])


def pack(inputs: Sequence[InputSpec], arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """One batch from each input's tensor (all with the same number of samples)."""
    n = len(arrays[inputs[0].name])
    batch = np.empty(n, dtype=feeds_dtype(inputs))
    for spec in inputs:
        batch[spec.name] = arrays[spec.name]
    return batch


def unpack(batch: np.ndarray) -> dict[str, np.ndarray]:
    """Each input's contiguous tensor from a batch made by ``pack``."""
    names = batch.dtype.names or ()
    return {name: np.ascontiguousarray(batch[name]) for name in names}


def zeros(inputs: Sequence[InputSpec], n: int) -> np.ndarray:
    """A batch of n all-zero samples (warm-up)."""
    return np.zeros(n, dtype=feeds_dtype(inputs))
