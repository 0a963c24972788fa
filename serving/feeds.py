"""A model's batch: each input's ``(n, *shape)`` tensor, under the input's name.

The binding step (``serving.request``) hands the batcher one array: a model's one input as a
plain array, several as one numpy structured array with a field per input (``pack``), so the
batcher concatenates and splits either like any array. The runtimes (``serving.runtime``,
``serving.onnx_runtime``) and prep's measuring read both forms back with ``unpack``, which is
where the two forms meet: past it every model has a list of named inputs. Apart from the
runtimes and the binding step so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np


class Named(Protocol):
    """An input's description: ``serving.config.InputSpec`` or a runtime's ``Feed``."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> Any: ...


def feeds_dtype(inputs: Sequence[Named]) -> np.dtype[Any]:
    """The structured dtype of a batch: one field per input, with its sample shape (a dynamic
    dimension, -1, taken as 1)."""
    return np.dtype([(spec.name, np.dtype(spec.dtype), tuple(max(d, 1) for d in spec.shape)) for spec in inputs])


def pack(inputs: Sequence[Named], arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """One batch from each input's tensor (all with the same number of samples)."""
    n = len(arrays[inputs[0].name])
    batch = np.empty(n, dtype=feeds_dtype(inputs))
    for spec in inputs:
        batch[spec.name] = arrays[spec.name]
    return batch


def batch(inputs: Sequence[Named], arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The batch of each input's tensor: a lone input's tensor as it is (no copy on the common
    path), several inputs packed."""
    if len(inputs) == 1:
        return arrays[inputs[0].name]
    return pack(inputs, arrays)


def unpack(batch: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Each input's tensor from a batch, by name (``names``: the inputs wanted; default all of a
    structured batch's fields). A plain array carries no names: it is the whole batch of the one
    name asked for."""
    fields = batch.dtype.names
    if fields is None:
        if names is None or len(names) != 1:
            raise ValueError(f"a batch of unnamed samples feeds one input, not {list(names or [])}")
        return {names[0]: batch}
    return {name: np.ascontiguousarray(batch[name]) for name in (fields if names is None else names)}


def zeros(inputs: Sequence[Named], n: int) -> np.ndarray:
    """A batch of n all-zero samples (warm-up)."""
    return np.zeros(n, dtype=feeds_dtype(inputs))


def pair(model: Sequence[str], wanted: Sequence[str], where: str) -> dict[str, str]:
    """Each wanted input's name -> the model's input it feeds. By name; an input left unmatched on
    each side feeds the other, as a lone input's name is free (its batch is a plain array, and a
    Keras layer's name seldom is the one the spec gives it). ValueError when that does not pair
    every input exactly once."""
    matched = {name: name for name in wanted if name in model}
    spare_wanted = [name for name in wanted if name not in matched]
    spare_model = [name for name in model if name not in matched]
    if len(spare_wanted) == 1 and len(spare_model) == 1:
        matched[spare_wanted[0]] = spare_model[0]
    elif spare_wanted or spare_model or len(set(wanted)) != len(wanted):
        raise ValueError(f"{where}: the model's inputs are {sorted(model)}, the config lists {list(wanted)}")
    return matched
