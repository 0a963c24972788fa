"""Calibration and evaluation data: .npz files with arrays `x` (inputs) and `y` (labels)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelprep.errors import UserError


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray | None


def load_npz(path: str | Path, field: str, sample_shape: tuple[int, ...], need_labels: bool) -> Dataset:
    """Load and check a data file; `field` is the spec field that names it (for the error)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError.single(str(path), field, f"cannot be read as .npz ({exc})", "save it with numpy.savez(path, x=..., y=...)") from None
    if "x" not in arrays:
        raise UserError.single(str(path), field, f"has no array 'x' (it has {sorted(arrays) or 'none'})", "save the inputs as x=...")
    x = arrays["x"]
    if x.ndim < 1 or tuple(x.shape[1:]) != sample_shape:
        raise UserError.single(
            str(path), field, f"'x' has shape {list(x.shape)} but the model takes [N, {', '.join(map(str, sample_shape))}]",
            "reshape the samples to model.inputs[0].shape with the batch first",
        )
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise UserError.single(str(path), field, f"'x' must hold finite numbers (dtype {x.dtype})", "convert it to float32 and drop NaN/inf rows")
    if len(x) == 0:
        raise UserError.single(str(path), field, "'x' holds no samples", "add at least one sample")
    y = arrays.get("y")
    if need_labels:
        if y is None:
            raise UserError.single(str(path), field, "has no labels: array 'y' is missing", "save the labels as y=... beside x")
        if y.shape[:1] != x.shape[:1]:
            raise UserError.single(str(path), field, f"'y' has {len(y)} labels for {len(x)} samples", "save one label per sample")
    return Dataset(x=x.astype(np.float32), y=None if y is None else y.astype(np.int64))
