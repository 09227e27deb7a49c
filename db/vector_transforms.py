"""Index-side vector transforms of a post-processed index version (see :mod:`db.postprocessed_versions`).

- :func:`database_side_augmentation`: DBA (Arandjelović & Zisserman 2012; Gordo et al. 2017), each gallery
  vector replaced by the (weighted) mean of itself and its ``top_n`` nearest gallery neighbours;
  :func:`augment_one` is the same rule for one new vector whose neighbours are already known;
- :class:`PCAWhitening`: PCA whitening learnt on a sample of embeddings (Jégou & Chum 2012), stored with
  an index version as bytes (:meth:`PCAWhitening.to_bytes` / :meth:`PCAWhitening.from_bytes`) and applied
  to the stored vectors and to every query vector.

Vectors are compared by cosine *similarity* (higher is better): inputs are L2-normalised internally, so they
only need finite, non-zero rows. Outputs are float32 and L2-normalised; inputs are never modified.
Neighbours are chosen by decreasing similarity, ties broken by lower index, except exact ties at the
``top_n`` cut-off, where ``np.argpartition`` picks arbitrarily among the tied vectors.
"""

from __future__ import annotations

import io
import numbers
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from clothes_search.vector_math import (
    as_matrix,
    check_finite,
    integer_at_least,
    non_negative_float,
    nonzero_row_norms,
    normalise_rows,
    top_indices,
    weighted_unit_sum,
)

__all__ = ["DBA_WEIGHTS", "PCAWhitening", "augment_one", "database_side_augmentation"]

DBAWeights = Literal["uniform", "linear"]
DBA_WEIGHTS: tuple[str, ...] = get_args(DBAWeights)
_BLOCK_ROWS = 1024  # rows per similarity block: bounds memory to _BLOCK_ROWS × G floats


def dba_weights(n: int, weights: str) -> np.ndarray:
    """``(n + 1,)`` weights of a vector (first) and its ``n`` neighbours, best first.

    ``"uniform"``: all 1; ``"linear"``: ``(n + 1 - r) / (n + 1)``, 1 for the vector itself down to
    ``1 / (n + 1)`` (the linearly decreasing weights of Gordo et al.).
    """
    if weights not in DBA_WEIGHTS:
        raise ValueError(f"weights must be one of {DBA_WEIGHTS}, got {weights!r}")
    return np.ones(n + 1) if weights == "uniform" else (n + 1 - np.arange(n + 1)) / (n + 1)


def database_side_augmentation(gallery: np.ndarray, top_n: int, weights: str = "uniform") -> np.ndarray:
    """Database-side augmentation (DBA) of a gallery.

    Row ``i`` becomes ``normalise(Σ_r w_r ĝ_(r))`` where ``ĝ_(0) = ĝ_i`` and ``ĝ_(1..n)`` are its ``n``
    most similar *other* gallery rows (cosine similarity), ``w`` from :func:`dba_weights`. Cost
    ``O(G²·d)``: an offline step for a whole catalogue.

    Args:
        gallery: ``(G, d)`` real embeddings, finite and non-zero rows (L2-normalised here), ``G >= 0``.
        top_n: neighbours per vector, ``>= 0``; values above ``G - 1`` act as ``G - 1``.
        weights: ``"uniform"`` or ``"linear"``.

    Returns:
        ``(G, d)`` float32 unit rows; ``top_n = 0`` returns the normalised gallery.

    Raises:
        ValueError: on a bad shape, non-finite or zero rows, a negative ``top_n`` or unknown ``weights``.
    """
    g = as_matrix(gallery, "gallery", allow_empty=True)
    top_n = integer_at_least(top_n, 0, "top_n")
    dba_weights(0, weights)  # validates the name before any work
    g_norms = nonzero_row_norms(g, "gallery")
    n_rows = g.shape[0]
    n = min(top_n, max(n_rows - 1, 0))
    w = dba_weights(n, weights)
    out = np.empty(g.shape, dtype=np.float32)
    for start in range(0, n_rows, _BLOCK_ROWS):
        block = slice(start, start + _BLOCK_ROWS)
        rows = np.arange(start, min(start + _BLOCK_ROWS, n_rows))
        if n == 0:
            out[block] = normalise_rows(g[block].astype(np.float64))
            continue
        # similarities are scaled by the norms rather than copying a normalised gallery
        similarity = (g[block] @ g.T) / (g_norms[rows, None] * g_norms[None, :])
        similarity[np.arange(rows.size), rows] = -np.inf  # the vector itself is added separately
        neighbours = np.concatenate([rows[:, None], top_indices(similarity, n)], axis=1)
        out[block] = normalise_rows(weighted_unit_sum(g, g_norms, neighbours, w))
    return out


def augment_one(vector: np.ndarray, neighbours: np.ndarray, weights: str) -> np.ndarray:
    """DBA of one ``(d,)`` vector given its ``(n, d)`` neighbours (best first), by the rule of
    :func:`database_side_augmentation`: the ``(d,)`` float32 unit result."""
    rows = np.concatenate(
        [vector[None, :], np.asarray(neighbours, dtype=np.float32).reshape(-1, vector.size)]
    )
    norms = nonzero_row_norms(rows, "vectors")
    index = np.arange(rows.shape[0])[None, :]
    return normalise_rows(weighted_unit_sum(rows, norms, index, dba_weights(rows.shape[0] - 1, weights)))[0]


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
        eps = non_negative_float(self.eps, "eps")
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
    def fit(
        cls, vectors: np.ndarray, dim: int | None = None, eps: float = 1e-6, whiten: bool = True
    ) -> PCAWhitening:
        """Learn the whitening from ``(N, d)`` finite training vectors (``N >= 2``).

        With ``whiten=False`` the axes are not scaled: a plain PCA projection to ``dim`` dimensions
        (a reduced index: ``d / dim`` times less memory, cosines approximately kept).

        Eigen-decomposition (``np.linalg.eigh``, float64) of the ``ddof=1`` covariance; the top ``dim``
        axes are kept (``dim`` defaults to and must not exceed ``min(N - 1, d)``, the most the centred data
        can span) and scaled by ``1 / sqrt(λ + eps)``. With ``eps = 0`` the whitened training data have
        identity covariance; ``eps > 0`` shrinks the axes of tiny variance. Eigenvalues below
        ``λ_max·d·2⁻⁵²`` (rounding noise of rank-deficient data) count as 0.

        Raises:
            ValueError: on a bad shape, ``N < 2``, non-finite values, ``dim`` outside ``1..min(N - 1, d)``,
                a negative ``eps``, or a zero eigenvalue kept with ``eps = 0``.
        """
        x = as_matrix(vectors, "vectors")
        n_samples, d = x.shape
        if n_samples < 2:
            raise ValueError(f"PCA whitening needs at least 2 training vectors, got {n_samples}")
        check_finite(x, "vectors")
        eps = non_negative_float(eps, "eps")
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
        projection = axes / np.sqrt(variance + eps) if whiten else axes
        return cls(mean=mean, projection=projection, explained_variance=variance, eps=eps)

    def transform(self, x: np.ndarray, normalise: bool = True) -> np.ndarray:
        """Whiten ``(M, d)`` finite vectors into ``(M, dim)`` float32 rows, L2-normalised by default.

        With ``normalise=False`` the raw whitened coordinates ``(x - mean) @ projection`` are returned.
        A vector equal to the mean whitens to zero and stays a zero row after normalisation.
        """
        values = as_matrix(x, "x", allow_empty=True)
        if values.shape[1] != self.input_dim:
            raise ValueError(f"x must have {self.input_dim} columns, got shape {values.shape}")
        check_finite(values, "x")
        whitened = (values.astype(np.float32) - self.mean) @ self.projection
        if not normalise:
            return whitened
        norms = np.linalg.norm(whitened, axis=1, keepdims=True)
        return whitened / np.where(norms > 0.0, norms, 1.0).astype(np.float32)

    def to_bytes(self) -> bytes:
        """The whitening as ``.npz`` bytes (stored with its index version); :meth:`from_bytes` restores it."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            mean=self.mean,
            projection=self.projection,
            explained_variance=self.explained_variance,
            eps=np.float64(self.eps),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PCAWhitening:
        with np.load(io.BytesIO(data)) as arrays:
            return cls(
                mean=arrays["mean"],
                projection=arrays["projection"],
                explained_variance=arrays["explained_variance"],
                eps=float(arrays["eps"]),
            )


def _frozen(value: np.ndarray, dtype: type, name: str) -> np.ndarray:
    array = np.array(value, dtype=dtype, copy=True)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    array.setflags(write=False)
    return array
