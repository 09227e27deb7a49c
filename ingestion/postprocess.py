"""Optional embedding post-processing for retrieval (all off by default in the product).

- :func:`average_query_expansion`: αQE with α = 0 (Chum et al. 2007; Radenović et al. 2018), the query
  replaced by the mean of itself and its ``top_n`` most similar gallery vectors;
- :func:`database_side_augmentation`: DBA (Arandjelović & Zisserman 2012; Gordo et al. 2017), each gallery
  vector replaced by the (weighted) mean of itself and its ``top_n`` nearest gallery neighbours;
- :class:`PCAWhitening`: PCA whitening learnt on a sample of embeddings (Jégou & Chum 2012), storable with
  an index version through :meth:`PCAWhitening.to_dict` / :meth:`PCAWhitening.from_dict`.

Vectors are compared by cosine *similarity* (higher is better): inputs are L2-normalised internally, so they
only need finite, non-zero rows. Outputs are float32 and L2-normalised; inputs are never modified.
Neighbours are chosen by decreasing similarity, ties broken by lower index, except exact ties at the
``top_n`` cut-off, where ``np.argpartition`` picks arbitrarily among the tied vectors.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PCA_FORMAT",
    "PCA_FORMAT_VERSION",
    "PCAWhitening",
    "average_query_expansion",
    "database_side_augmentation",
]

PCA_FORMAT = "pca_whitening"
PCA_FORMAT_VERSION = 1
_BLOCK_ROWS = 1024  # rows per similarity block: bounds memory to _BLOCK_ROWS × G floats
_DBA_WEIGHTS = ("uniform", "linear")


def average_query_expansion(query: np.ndarray, gallery: np.ndarray, top_n: int) -> np.ndarray:
    """Average query expansion (αQE, α = 0).

    Args:
        query: ``(Q, d)`` real embeddings, finite and non-zero rows (L2-normalised here).
        gallery: ``(G, d)`` real embeddings, same conditions; ``G = 0`` is allowed (nothing to expand with).
        top_n: number of gallery neighbours averaged in, ``>= 0``; values above ``G`` act as ``G``.

    Returns:
        ``(Q, d)`` float32 unit rows: ``normalise(q̂ + Σ ĝ)`` over the ``top_n`` gallery vectors of highest
        cosine similarity to ``q̂``; ``top_n = 0`` returns the normalised query.

    Raises:
        ValueError: on bad shapes, mismatched ``d``, non-finite or zero rows, or a negative ``top_n``.
    """
    q = _as_matrix(query, "query")
    g = _as_matrix(gallery, "gallery", allow_empty=True)
    _same_dim(q, g)
    top_n = _non_negative_int(top_n, "top_n")
    _check_rows(q, "query")
    g_norms = _check_rows(g, "gallery")
    q64 = q.astype(np.float64)
    q_unit = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
    n = min(top_n, g.shape[0])
    if n == 0:
        return q_unit.astype(np.float32)
    out = np.empty(q.shape, dtype=np.float32)
    q_unit32 = q_unit.astype(np.float32)
    for start in range(0, q.shape[0], _BLOCK_ROWS):
        block = slice(start, start + _BLOCK_ROWS)
        similarity = (q_unit32[block] @ g.T) / g_norms[None, :]
        neighbours = _top_indices(similarity, n)
        total = q_unit[block] + _sum_unit_rows(g, g_norms, neighbours, np.ones(n))
        out[block] = _normalise(total)
    return out


def database_side_augmentation(gallery: np.ndarray, top_n: int, weights: str = "uniform") -> np.ndarray:
    """Database-side augmentation (DBA) of a gallery.

    Row ``i`` becomes ``normalise(Σ_r w_r ĝ_(r))`` where ``ĝ_(0) = ĝ_i`` and ``ĝ_(1..n)`` are its ``n``
    most similar *other* gallery rows (cosine similarity). Weights: ``"uniform"`` ``w_r = 1``;
    ``"linear"`` ``w_r = (n + 1 - r) / (n + 1)`` (1 for the vector itself down to ``1 / (n + 1)``), the
    linearly decreasing weights of Gordo et al. Cost ``O(G²·d)``: an offline step for a whole catalogue.

    Args:
        gallery: ``(G, d)`` real embeddings, finite and non-zero rows (L2-normalised here), ``G >= 0``.
        top_n: neighbours per vector, ``>= 0``; values above ``G - 1`` act as ``G - 1``.
        weights: ``"uniform"`` or ``"linear"``.

    Returns:
        ``(G, d)`` float32 unit rows; ``top_n = 0`` returns the normalised gallery.

    Raises:
        ValueError: on a bad shape, non-finite or zero rows, a negative ``top_n`` or unknown ``weights``.
    """
    g = _as_matrix(gallery, "gallery", allow_empty=True)
    top_n = _non_negative_int(top_n, "top_n")
    if weights not in _DBA_WEIGHTS:
        raise ValueError(f"weights must be one of {_DBA_WEIGHTS}, got {weights!r}")
    g_norms = _check_rows(g, "gallery")
    n_rows = g.shape[0]
    n = min(top_n, max(n_rows - 1, 0))
    w = np.ones(n + 1) if weights == "uniform" else (n + 1 - np.arange(n + 1)) / (n + 1)
    out = np.empty(g.shape, dtype=np.float32)
    for start in range(0, n_rows, _BLOCK_ROWS):
        block = slice(start, start + _BLOCK_ROWS)
        rows = np.arange(start, min(start + _BLOCK_ROWS, n_rows))
        if n == 0:
            out[block] = _normalise(g[block].astype(np.float64))
            continue
        # similarities are scaled by the norms rather than copying a normalised gallery
        similarity = (g[block] @ g.T) / (g_norms[rows, None] * g_norms[None, :])
        similarity[np.arange(rows.size), rows] = -np.inf  # the vector itself is added separately
        neighbours = np.concatenate([rows[:, None], _top_indices(similarity, n)], axis=1)
        out[block] = _normalise(_sum_unit_rows(g, g_norms, neighbours, w))
    return out


@dataclass(frozen=True, eq=False)
class PCAWhitening:
    """PCA whitening ``x -> normalise((x - mean) @ projection)``, learnt with :meth:`fit`.

    Attributes:
        mean: ``(d,)`` float32 mean of the training vectors.
        projection: ``(d, dim)`` float32, column ``k`` is the ``k``-th principal axis (decreasing variance,
            sign fixed so its largest-magnitude entry is positive) divided by ``sqrt(λ_k + eps)``.
        explained_variance: ``(dim,)`` float64 eigenvalues ``λ_k`` of the training covariance (``ddof=1``)
            kept, in decreasing order: the variance of the data along each kept axis.
        eps: the shrinkage added to every eigenvalue before the inverse square root.

    The arrays are stored as read-only copies.
    """

    mean: np.ndarray
    projection: np.ndarray
    explained_variance: np.ndarray
    eps: float

    def __post_init__(self) -> None:
        mean = _frozen(self.mean, np.float32, "mean")
        projection = _frozen(self.projection, np.float32, "projection")
        variance = _frozen(self.explained_variance, np.float64, "explained_variance")
        if mean.ndim != 1 or mean.size < 1:
            raise ValueError(f"mean must be a non-empty 1-D array, got shape {mean.shape}")
        if projection.ndim != 2 or projection.shape[0] != mean.size or projection.shape[1] < 1:
            raise ValueError(f"projection must have shape ({mean.size}, dim >= 1), got {projection.shape}")
        if variance.shape != (projection.shape[1],):
            raise ValueError(
                f"explained_variance must have shape ({projection.shape[1]},), got {variance.shape}"
            )
        eps = _non_negative_float(self.eps, "eps")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "projection", projection)
        object.__setattr__(self, "explained_variance", variance)
        object.__setattr__(self, "eps", eps)

    @property
    def input_dim(self) -> int:
        """``d``, the dimension of the vectors :meth:`transform` accepts."""
        return int(self.mean.size)

    @property
    def dim(self) -> int:
        """The output dimension."""
        return int(self.projection.shape[1])

    @classmethod
    def fit(cls, vectors: np.ndarray, dim: int | None = None, eps: float = 1e-6) -> PCAWhitening:
        """Learn the whitening from ``(N, d)`` finite training vectors (``N >= 2``).

        Eigen-decomposition (``np.linalg.eigh``, float64) of the ``ddof=1`` covariance; the top ``dim``
        axes are kept (``dim`` defaults to and must not exceed ``min(N - 1, d)``, the most the centred data
        can span) and scaled by ``1 / sqrt(λ + eps)``. With ``eps = 0`` the whitened training data have
        identity covariance; ``eps > 0`` shrinks the axes of tiny variance. Eigenvalues below
        ``λ_max·d·2⁻⁵²`` (rounding noise of rank-deficient data) count as 0.

        Raises:
            ValueError: on a bad shape, ``N < 2``, non-finite values, ``dim`` outside ``1..min(N - 1, d)``,
                a negative ``eps``, or a zero eigenvalue kept with ``eps = 0``.
        """
        x = _as_matrix(vectors, "vectors")
        n_samples, d = x.shape
        if n_samples < 2:
            raise ValueError(f"PCA whitening needs at least 2 training vectors, got {n_samples}")
        _check_finite(x, "vectors")
        eps = _non_negative_float(eps, "eps")
        max_dim = min(n_samples - 1, d)
        if dim is None:
            dim = max_dim
        elif isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not 1 <= dim <= max_dim:
            raise ValueError(
                f"dim must be an integer in [1, min(N - 1, d)] = [1, {max_dim}] for N={n_samples}, d={d}; "
                f"got {dim!r}"
            )
        dim = int(dim)
        data = x.astype(np.float64)
        mean = data.mean(axis=0)
        data -= mean
        covariance = (data.T @ data) / (n_samples - 1)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues, kind="stable")[::-1][:dim]
        # Eigenvalues within rounding of zero (rank-deficient data) are zero: whitening would blow up noise.
        tolerance = max(float(eigenvalues.max()), 0.0) * d * np.finfo(np.float64).eps
        variance = np.where(eigenvalues[order] > tolerance, eigenvalues[order], 0.0)
        axes = eigenvectors[:, order]
        signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(dim)])
        axes *= np.where(signs == 0, 1.0, signs)
        if np.any(variance + eps <= 0.0):
            raise ValueError(
                f"the training data have (numerically) zero variance along {int(np.sum(variance <= 0.0))} "
                f"of the {dim} kept axes: pass eps > 0 or a smaller dim"
            )
        projection = axes / np.sqrt(variance + eps)
        return cls(mean=mean, projection=projection, explained_variance=variance, eps=eps)

    def transform(self, x: np.ndarray, normalise: bool = True) -> np.ndarray:
        """Whiten ``(M, d)`` finite vectors into ``(M, dim)`` float32 rows, L2-normalised by default.

        With ``normalise=False`` the raw whitened coordinates ``(x - mean) @ projection`` are returned.
        A vector equal to the mean whitens to zero and stays a zero row after normalisation.
        """
        values = _as_matrix(x, "x", allow_empty=True)
        if values.shape[1] != self.input_dim:
            raise ValueError(f"x must have {self.input_dim} columns, got shape {values.shape}")
        _check_finite(values, "x")
        whitened = (values.astype(np.float32) - self.mean) @ self.projection
        if not normalise:
            return whitened
        norms = np.linalg.norm(whitened, axis=1, keepdims=True)
        return whitened / np.where(norms > 0.0, norms, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (ints, floats, nested lists) that :meth:`from_dict` restores exactly."""
        return {
            "format": PCA_FORMAT,
            "format_version": PCA_FORMAT_VERSION,
            "input_dim": self.input_dim,
            "dim": self.dim,
            "eps": self.eps,
            "mean": self.mean.tolist(),
            "projection": self.projection.tolist(),
            "explained_variance": self.explained_variance.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PCAWhitening:
        """Rebuild a whitening from :meth:`to_dict`'s output.

        Raises:
            ValueError: on another format or version, missing keys, or inconsistent shapes or values.
        """
        if not isinstance(data, dict):
            raise ValueError(f"expected a dict, got {type(data).__name__}")
        if data.get("format") != PCA_FORMAT:
            raise ValueError(
                f"not a PCA whitening: format is {data.get('format')!r}, expected {PCA_FORMAT!r}"
            )
        if data.get("format_version") != PCA_FORMAT_VERSION:
            raise ValueError(
                f"unsupported PCA whitening format_version {data.get('format_version')!r} "
                f"(this code reads version {PCA_FORMAT_VERSION})"
            )
        missing = [
            k
            for k in ("input_dim", "dim", "eps", "mean", "projection", "explained_variance")
            if k not in data
        ]
        if missing:
            raise ValueError(f"PCA whitening dict lacks {missing}")
        try:
            whitening = cls(
                mean=np.asarray(data["mean"], dtype=np.float32),
                projection=np.asarray(data["projection"], dtype=np.float32),
                explained_variance=np.asarray(data["explained_variance"], dtype=np.float64),
                eps=data["eps"],
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid PCA whitening dict: {exc}") from exc
        if (whitening.input_dim, whitening.dim) != (data["input_dim"], data["dim"]):
            raise ValueError(
                f"PCA whitening dict says input_dim={data['input_dim']!r}, dim={data['dim']!r} but its "
                f"projection has shape {whitening.projection.shape}"
            )
        return whitening


def _top_indices(similarity: np.ndarray, n: int) -> np.ndarray:
    """``(R, n)`` column indices of the ``n`` highest similarities per row, best first (``1 <= n <= C``)."""
    n_cols = similarity.shape[1]
    if n < n_cols:
        candidates = np.argpartition(-similarity, n - 1, axis=1)[:, :n]
    else:
        candidates = np.broadcast_to(np.arange(n_cols), similarity.shape).copy()
    picked = np.take_along_axis(similarity, candidates, axis=1)
    order = np.lexsort((candidates, -picked), axis=-1)
    return np.take_along_axis(candidates, order, axis=1)


def _sum_unit_rows(g: np.ndarray, norms: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(R, d)`` float64 ``Σ_r weights[r] · g[index[:, r]] / norms[index[:, r]]``."""
    total = np.zeros((index.shape[0], g.shape[1]))
    for r in range(index.shape[1]):
        cols = index[:, r]
        total += (weights[r] / norms[cols])[:, None] * g[cols]
    return total


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows of a float64 matrix scaled to unit length, as float32 (rows are known to be non-zero)."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _as_matrix(x: np.ndarray, name: str, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a 2-D real array (a view when possible; never written to) with ``d >= 1``."""
    array = np.asarray(x)
    if array.ndim != 2 or array.shape[1] < 1 or (array.shape[0] < 1 and not allow_empty):
        rows = "(n >= 0, d)" if allow_empty else "(n >= 1, d)"
        raise ValueError(f"{name} must be a 2-D {rows} array with d >= 1, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.dtype != np.float32 and array.dtype != np.float64:
        array = array.astype(np.float32)
    return array


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"query and gallery dimensions differ: query is {a.shape}, gallery is {b.shape}")


def _check_finite(x: np.ndarray, name: str) -> None:
    for start in range(0, x.shape[0], 16 * _BLOCK_ROWS):
        if not np.isfinite(x[start : start + 16 * _BLOCK_ROWS]).all():
            raise ValueError(f"{name} contains NaN or infinite values")


def _check_rows(x: np.ndarray, name: str) -> np.ndarray:
    """Check ``x`` is finite with non-zero rows; return the ``(n,)`` row norms (same float dtype as ``x``)."""
    _check_finite(x, name)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(x.dtype)
    zero = np.flatnonzero(~(norms > 0.0))
    if zero.size:
        raise ValueError(f"{name} has all-zero rows (no direction to compare): {zero[:10].tolist()}")
    return norms


def _non_negative_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _non_negative_float(value: float, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _frozen(value: np.ndarray, dtype: type, name: str) -> np.ndarray:
    array = np.array(value, dtype=dtype, copy=True)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    array.setflags(write=False)
    return array
