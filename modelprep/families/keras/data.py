"""Calibration, evaluation and fine-tuning data: .npz files with arrays `x` (inputs) and `y` (labels), or one array per input name."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iac.spec.errors import UserError


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray | None


def load_npz(
    path: str | Path, field: str, sample_shape: tuple[int, ...], need_labels: bool, labels: str = "class"
) -> Dataset:
    """Load and check a data file; `field` is the spec field that names it (for the error).
    `labels` is "class" (integer class ids, for accuracy/top_k) or "value" (floats, for mae)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError.single(
            str(path), field, f"cannot be read as .npz ({exc})", "save it with numpy.savez(path, x=..., y=...)"
        ) from None
    if "x" not in arrays:
        raise UserError.single(
            str(path), field, f"has no array 'x' (it has {sorted(arrays) or 'none'})", "save the inputs as x=..."
        )
    x = arrays["x"]
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(sample_shape):
        raise UserError.single(
            str(path),
            field,
            f"'x' has shape {list(x.shape)} but the model takes [N, {', '.join(map(str, sample_shape))}]",
            "reshape the samples to model.inputs[0].shape with the batch first",
        )
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UserError.single(
            str(path),
            field,
            f"'x' has dtype {x.dtype}, not a real number type the model's float32 input can take",
            "save the inputs as float32 (x=x.astype('float32'))",
        )
    if not np.all(np.isfinite(x)):
        raise UserError.single(
            str(path),
            field,
            f"'x' must hold finite numbers (dtype {x.dtype})",
            "convert it to float32 and drop NaN/inf rows",
        )
    if len(x) == 0:
        raise UserError.single(str(path), field, "'x' holds no samples", "add at least one sample")
    y = _labels(arrays, len(x), labels, need_labels, path, field, "beside x")
    return Dataset(x=x.astype(np.float32), y=y)


def load_npz_inputs(
    path: str | Path,
    field: str,
    inputs: tuple[tuple[str, tuple[int, ...], str], ...],
    need_labels: bool,
    labels: str = "class",
) -> Dataset:
    """A data file for a model with several inputs: one array per input name (e.g. `user_id`,
    `item_id`) and `y`; `x` is then a structured array with one field per input
    (``serving.feeds.pack``), which the runtimes and the Keras baseline take by name."""
    from serving.config import InputSpec
    from serving.feeds import pack

    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        names = ", ".join(f"{name}=..." for name, _, _ in inputs)
        raise UserError.single(
            str(path), field, f"cannot be read as .npz ({exc})", f"save it with numpy.savez(path, {names}, y=...)"
        ) from None
    specs = [InputSpec(name, tuple(shape), dtype) for name, shape, dtype in inputs]
    columns: dict[str, np.ndarray] = {}
    for i, spec in enumerate(specs):
        if spec.name not in arrays:
            raise UserError.single(
                str(path),
                field,
                f"has no array {spec.name!r} for input {spec.name!r} (it has {sorted(arrays) or 'none'})",
                "save one array per input name, e.g. numpy.savez(path, "
                + ", ".join(f"{s.name}=..." for s in specs)
                + ", y=...)",
            )
        a = arrays[spec.name]
        if a.ndim < 1 or tuple(a.shape[1:]) != spec.shape:
            raise UserError.single(
                str(path),
                field,
                f"{spec.name!r} has shape {list(a.shape)} but the input takes [N, {', '.join(map(str, spec.shape))}]",
                f"reshape it to model.inputs[{i}].shape with the batch first",
            )
        integer = np.dtype(spec.dtype).kind in "iu"
        if integer and not np.issubdtype(a.dtype, np.integer):
            raise UserError.single(
                str(path),
                field,
                f"{spec.name!r} has dtype {a.dtype}, but the input takes integers ({spec.dtype})",
                f"save it as integers ({spec.name}={spec.name}.astype('{spec.dtype}'))",
            )
        if integer:
            info = np.iinfo(spec.dtype)
            if a.size and (a.min() < info.min or a.max() > info.max):
                raise UserError.single(
                    str(path),
                    field,
                    f"{spec.name!r} holds values outside {spec.dtype}",
                    "store ids that fit the input's dtype",
                )
        elif not (np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_ and np.all(np.isfinite(a))):
            raise UserError.single(
                str(path),
                field,
                f"{spec.name!r} must hold finite numbers",
                "convert it to float32 and drop NaN/inf rows",
            )
        columns[spec.name] = a
    sizes = {name: len(a) for name, a in columns.items()}
    if len(set(sizes.values())) != 1:
        raise UserError.single(
            str(path),
            field,
            f"the inputs hold different numbers of samples ({sizes})",
            "save the same number of samples for every input",
        )
    n = next(iter(sizes.values()))
    if n == 0:
        raise UserError.single(str(path), field, "holds no samples", "add at least one sample")
    y = _labels(arrays, n, labels, need_labels, path, field, "beside the inputs")
    return Dataset(x=pack(specs, columns), y=y)


def _labels(
    arrays: dict[str, np.ndarray], n: int, labels: str, need_labels: bool, path: str | Path, field: str, beside: str
) -> np.ndarray | None:
    """Array 'y': one label per sample, class ids (int64) or targets (float32); None when absent and
    not needed."""
    y = arrays.get("y")
    if need_labels and y is None:
        raise UserError.single(
            str(path), field, "has no labels: array 'y' is missing", f"save the labels as y=... {beside}"
        )
    if y is None:
        return None
    if y.shape[:1] != (n,):
        raise UserError.single(
            str(path), field, f"'y' has {len(y) if y.ndim else 0} labels for {n} samples", "save one label per sample"
        )
    if labels == "class" and not (np.issubdtype(y.dtype, np.integer) or _integral(y)):
        raise UserError.single(
            str(path),
            field,
            f"'y' holds {y.dtype} values that are not class ids, but optimize.metric scores classes",
            "save integer class ids as y, or set optimize.metric: mae for a regression model",
        )
    return y.astype(np.int64) if labels == "class" else y.astype(np.float32)


def _integral(y: np.ndarray) -> bool:
    return bool(np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)))
