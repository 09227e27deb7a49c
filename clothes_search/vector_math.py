"""What the numeric post-processing functions (re-ranking, QE, DBA, whitening) share.

- input checks: each raises :class:`ValueError` with a message naming the argument, so that a
  caller's mistake is reported where it was made rather than as a NumPy error further in;
- nearest-neighbour helpers on cosine *similarities* (higher is better): the top-n columns of a
  similarity block, weighted sums of unit rows, row normalisation.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

#: rows checked at a time, so that a check never makes a copy of a whole large matrix
_CHECK_BLOCK_ROWS = 16 * 1024


def as_matrix(x: np.ndarray, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a 2-D real float32 or float64 array (a view when possible; never written to).

    Integers become float32. ``d >= 1`` always; ``n >= 1`` unless ``allow_empty``.
    """
    array = np.asarray(x)
    if array.ndim != 2 or array.shape[1] < 1 or (array.shape[0] < 1 and not allow_empty):
        size = "2-D (n >= 0, d)" if allow_empty else "non-empty 2-D (n >= 1, d)"
        raise ValueError(f"{name} must be a {size} array with d >= 1, got shape {array.shape}")
    if not is_real(array.dtype):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.dtype != np.float32 and array.dtype != np.float64:
        array = array.astype(np.float32)
    return array


def is_real(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise unless every value of ``x`` is finite (checked a block of rows at a time)."""
    for start in range(0, x.shape[0], _CHECK_BLOCK_ROWS):
        if not np.isfinite(x[start : start + _CHECK_BLOCK_ROWS]).all():
            raise ValueError(f"{name} contains NaN or infinite values")


def nonzero_row_norms(x: np.ndarray, name: str) -> np.ndarray:
    """Check that ``x`` is finite with no all-zero row; return its ``(n,)`` row norms (``x``'s dtype)."""
    check_finite(x, name)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(x.dtype)
    zero = np.flatnonzero(~(norms > 0.0))
    if zero.size:
        raise ValueError(f"{name} has all-zero rows (no direction to compare): {zero[:10].tolist()}")
    return norms


def same_dimension(query: np.ndarray, gallery: np.ndarray) -> None:
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query and gallery dimensions differ: query is {query.shape}, gallery is {gallery.shape}"
        )


def integer_at_least(value: int, minimum: int, name: str) -> int:
    """``value`` as an ``int`` (``bool`` refused) that is ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def unit_interval(value: float, name: str) -> float:
    """``value`` as a ``float`` in ``[0, 1]`` (NaN and ``bool`` refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def non_negative_float(value: float, name: str) -> float:
    """``value`` as a finite ``float >= 0`` (``bool`` refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def top_indices(similarity: np.ndarray, n: int) -> np.ndarray:
    """``(R, n)`` column indices of the ``n`` highest similarities per row, best first (``1 <= n <= C``).

    Ties are broken by the lower column index, except exact ties at the ``n``-th place, where
    ``np.argpartition`` picks arbitrarily among the tied columns.
    """
    n_cols = similarity.shape[1]
    if n < n_cols:
        candidates = np.argpartition(-similarity, n - 1, axis=1)[:, :n]
    else:
        candidates = np.broadcast_to(np.arange(n_cols), similarity.shape).copy()
    picked = np.take_along_axis(similarity, candidates, axis=1)
    order = np.lexsort((candidates, -picked), axis=-1)
    return np.take_along_axis(candidates, order, axis=1)


def weighted_unit_sum(
    rows: np.ndarray, norms: np.ndarray, index: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """``(R, d)`` float64 ``Σ_r weights[r] · rows[index[:, r]] / norms[index[:, r]]``: a weighted sum of
    the unit-length versions of the indexed rows, without copying a normalised ``rows``."""
    total = np.zeros((index.shape[0], rows.shape[1]))
    for r in range(index.shape[1]):
        cols = index[:, r]
        total += (weights[r] / norms[cols])[:, None] * rows[cols]
    return total


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows of a float64 matrix scaled to unit length, as float32 (rows are known to be non-zero)."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
