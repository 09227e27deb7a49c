"""k-reciprocal re-ranking of a query's candidate pool (Zhong et al., CVPR 2017).

Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017,
following the widely used reference implementation (Zhong's ``re_ranking``, as in fast-reid's
``fastreid/evaluation/rerank.py``), vectorised for the query-time case: a few probes and the ``K'`` (50...200)
candidates the vector store returned for them. All probes and candidates form one pool of
``N = Q + G`` vectors:

1. original distance ``d(i, j) = 2 - 2·cos(i, j)`` (the squared Euclidean distance of the L2-normalised
   rows), each column divided by its maximum as in the reference (the matrix is symmetric, so row ``i`` of
   the result is row ``i`` divided by its maximum);
2. ``N(p, k)``: the ``k + 1`` nearest pool members of ``p`` (``p`` itself first) and the k-reciprocal set
   ``R(p, k) = {q in N(p, k) : p in N(q, k)}``;
3. expansion: ``R*(p) = R(p, k1) ∪ R(q, ½k1)`` for every ``q`` in ``R(p, k1)`` with
   ``|R(q, ½k1) ∩ R(p, k1)| > ⅔·|R(q, ½k1)|``;
4. Gaussian-kernel encoding ``V[p, q] = exp(-d(p, q)) / Σ_{q' in R*(p)} exp(-d(p, q'))`` on ``R*(p)``,
   0 elsewhere;
5. local query expansion: ``V[p]`` replaced by the mean of ``V`` over the ``k2`` nearest pool members of
   ``p``;
6. Jaccard distance ``1 - m / (2 - m)`` with ``m = Σ_k min(V[p, k], V[g, k])`` over the support of ``V[p]``
   (what the reference's inverted index computes; the rows of ``V`` sum to 1);
7. final distance ``(1 - λ)·Jaccard + λ·original``.

Deliberate differences from the reference, none of which changes its result on vectors without exact ties:

- the neighbour ranking is a *stable* argsort (ties broken by pool index) with every member forced to the
  head of its own list, so ``p ∈ R(p, k)`` always holds and ``V`` never has an empty row (the reference uses
  an unstable sort and, with more than ``k1`` exact duplicates, can divide by zero);
- the arithmetic is float64 throughout (the reference's ``V`` is float32); the result is cast to float32;
- rows are L2-normalised here, so inputs only need to be non-zero; an all-identical pool (every distance
  0) divides by 1 instead of 0;
- ``k1``, ``½k1 = round(k1 / 2)`` (half to even, like ``np.around``) and ``k2`` are clipped to the pool
  (``N - 1``, ``N - 1`` and ``N``), which is exactly what the reference's slicing does when they exceed it.

Cost: ``O(N²·d + N³)`` (the Gram matrix and two boolean-set products done as BLAS matrix products), meant
for pools of a few hundred; ``Q`` only adds a cheap loop for the Jaccard step.
"""

from __future__ import annotations

import numpy as np

from clothes_search.vector_math import (
    as_matrix,
    integer_at_least,
    nonzero_row_norms,
    same_dimension,
    unit_interval,
)

__all__ = ["k_reciprocal_rerank"]


def k_reciprocal_rerank(
    query: np.ndarray,
    gallery: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-rank ``gallery`` for each row of ``query`` with k-reciprocal encoding.

    Args:
        query: ``(Q, d)`` probe embeddings (any real dtype, float32 in the product), ``Q >= 1``; rows must be
            finite and non-zero and are L2-normalised here (a no-op for the product's unit vectors).
        gallery: ``(G, d)`` candidate embeddings, ``G >= 1``, same conditions.
        k1: size of the k-reciprocal neighbourhood, ``>= 1``; values above ``Q + G - 1`` act as
            ``Q + G - 1``.
        k2: size of the local query expansion, ``>= 1`` (1 disables it); values above ``Q + G`` act as
            ``Q + G``.
        lambda_value: weight of the original distance in the final one, ``0 <= λ <= 1``; ``λ = 1`` gives the
            plain cosine ranking (as distances ``(2 - 2·cos) / row max``).

    Returns:
        ``(Q, G)`` float32 *distances* (lower is better), ``(1 - λ)·Jaccard + λ·original``, each in
        ``[0, 1]``; a stable ``argsort`` of a row is the new order of the gallery.

    Raises:
        ValueError: on bad shapes, non-finite or zero rows, ``k1 < 1``, ``k2 < 1`` or ``λ`` outside
            ``[0, 1]``.
    """
    probes = _as_features(query, "query")
    candidates = _as_features(gallery, "gallery")
    same_dimension(probes, candidates)
    k1 = integer_at_least(k1, 1, "k1")
    k2 = integer_at_least(k2, 1, "k2")
    lam = unit_interval(lambda_value, "lambda_value")

    pool = np.concatenate([probes, candidates])
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    n_query, n = probes.shape[0], pool.shape[0]

    original = _original_distance(pool)
    rank = _neighbour_rank(original)
    position = np.empty_like(rank)
    position[np.arange(n)[:, None], rank] = np.arange(n)[None, :]  # position[p, q]: rank of q in p's list

    reciprocal = _reciprocal_sets(position, min(k1, n - 1))
    half = _reciprocal_sets(position, min(round(k1 / 2), n - 1))
    expanded = _expand(reciprocal, half)

    weights = np.where(expanded, np.exp(-original), 0.0)
    encoding = weights / weights.sum(axis=1, keepdims=True)  # (N, N), rows sum to 1

    k2 = min(k2, n)
    if k2 > 1:
        expanded_encoding = np.zeros_like(encoding)
        for r in range(k2):
            expanded_encoding += encoding[rank[:, r]]
        encoding = expanded_encoding / k2

    jaccard = _jaccard_distance(encoding[:n_query], encoding[n_query:])
    final = (1.0 - lam) * jaccard + lam * original[:n_query, n_query:]
    return final.astype(np.float32)


def _original_distance(pool: np.ndarray) -> np.ndarray:
    """``(N, N)`` float64 distances ``2 - 2·cos`` of unit rows, each row divided by its maximum."""
    gram = pool @ pool.T
    dist = 2.0 - 2.0 * gram
    dist = (dist + dist.T) / 2.0
    np.fill_diagonal(dist, 0.0)
    np.maximum(dist, 0.0, out=dist)
    # The reference divides each column by its maximum and transposes; for a symmetric matrix that is
    # dividing each row by its own maximum.
    row_max = dist.max(axis=1, keepdims=True)
    row_max[row_max <= 0.0] = 1.0  # every member identical: keep the zeros
    return dist / row_max


def _neighbour_rank(original: np.ndarray) -> np.ndarray:
    """``(N, N)`` pool indices by increasing distance for each member, the member itself first."""
    keys = original.copy()
    np.fill_diagonal(keys, -1.0)
    return np.argsort(keys, axis=1, kind="stable")


def _reciprocal_sets(position: np.ndarray, k: int) -> np.ndarray:
    """``(N, N)`` bool, row ``p`` is ``R(p, k)``: ``q`` in ``p``'s ``k + 1`` nearest and ``p`` in ``q``'s."""
    nearest = position <= k
    return nearest & nearest.T


def _expand(reciprocal: np.ndarray, half: np.ndarray) -> np.ndarray:
    """``(N, N)`` bool ``R*(p)``: ``R(p, k1)`` and each qualifying ``R(q, ½k1)``, ``q`` in ``R(p, k1)``."""
    full_f = reciprocal.astype(np.float32)  # set sizes stay far below 2**24, so float32 counts are exact
    half_f = half.astype(np.float32)
    overlap = full_f @ half_f.T  # overlap[p, q] = |R(p, k1) ∩ R(q, ½k1)|
    half_size = half_f.sum(axis=1)
    accepted = reciprocal & (3.0 * overlap > 2.0 * half_size[None, :])
    return reciprocal | ((accepted.astype(np.float32) @ half_f) > 0.0)


def _jaccard_distance(query_encoding: np.ndarray, gallery_encoding: np.ndarray) -> np.ndarray:
    """``(Q, G)`` float64 Jaccard distances between rows of the ``(Q, N)`` and ``(G, N)`` encodings."""
    out = np.empty((query_encoding.shape[0], gallery_encoding.shape[0]))
    for i, row in enumerate(query_encoding):
        support = np.flatnonzero(row)
        shared = np.minimum(row[support], gallery_encoding[:, support]).sum(axis=1)
        out[i] = 1.0 - shared / (2.0 - shared)
    return out


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    """A float64 copy of a non-empty ``(n, d)`` real matrix with finite, non-zero rows."""
    array = as_matrix(x, name)
    nonzero_row_norms(array, name)
    return array.astype(np.float64)  # always a copy: the caller's array is never touched
