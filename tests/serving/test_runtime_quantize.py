"""The LiteRT runtime's input quantization: the in-place ufunc form gives the textbook values."""

import numpy as np
import pytest

from serving.runtime import quantize


def _reference(batch: np.ndarray, dtype: np.dtype, scale: float, zero: int) -> np.ndarray:
    info = np.iinfo(dtype)
    scaled = np.round(batch.astype(np.float32) / np.float32(scale)) + np.float32(zero)
    return np.clip(scaled, info.min, info.max).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
@pytest.mark.parametrize("source", [np.float32, np.float64])
def test_quantize_matches_round_then_clip(dtype: type, source: type) -> None:
    scale, zero = 0.0627451, (-128 if dtype is np.int8 else 3)
    rng = np.random.default_rng(7)
    batch = np.concatenate(
        [
            rng.uniform(-1e4, 1e4, size=(8, 16)),  # far outside the range: clipped
            rng.uniform(0, 16, size=(8, 16)),  # the usual inputs
            (np.arange(-64, 64, 0.5).reshape(-1, 16) * scale),  # halfway values: round half to even
        ]
    ).astype(source)
    got = quantize(batch, np.dtype(dtype), scale, zero)
    assert got.dtype == np.dtype(dtype) and got.shape == batch.shape
    assert np.array_equal(got, _reference(batch, np.dtype(dtype), scale, zero))
    assert got.min() >= np.iinfo(dtype).min and got.max() <= np.iinfo(dtype).max
    assert batch.dtype == np.dtype(source)  # the caller's batch is left as it was
