"""Average query expansion (αQE with α = 0; Chum et al. 2007, Radenović et al. 2018), off by default.

The query is replaced by the mean of itself and its ``top_n`` most similar candidates, then
searched again or used to re-score the candidates. Vectors are compared by cosine *similarity*
(higher is better); inputs are L2-normalised here, so they only need finite, non-zero rows. The
output is float32 and L2-normalised; inputs are never modified.
"""

from __future__ import annotations

import numpy as np

from clothes_search.vector_math import (
    as_matrix,
    integer_at_least,
    nonzero_row_norms,
    normalise_rows,
    same_dimension,
    top_indices,
    weighted_unit_sum,
)

__all__ = ["average_query_expansion"]

_BLOCK_ROWS = 1024  # query rows per similarity block: bounds memory to _BLOCK_ROWS × G floats


def average_query_expansion(query: np.ndarray, gallery: np.ndarray, top_n: int) -> np.ndarray:
    """Average query expansion (αQE, α = 0).

    Args:
        query: ``(Q, d)`` real embeddings, ``Q >= 1``, finite and non-zero rows (L2-normalised here).
        gallery: ``(G, d)`` real embeddings, same conditions; ``G = 0`` is allowed (nothing to expand with).
        top_n: number of gallery neighbours averaged in, ``>= 0``; values above ``G`` act as ``G``.

    Returns:
        ``(Q, d)`` float32 unit rows: ``normalise(q̂ + Σ ĝ)`` over the ``top_n`` gallery vectors of highest
        cosine similarity to ``q̂``; ``top_n = 0`` returns the normalised query.

    Raises:
        ValueError: on bad shapes, mismatched ``d``, non-finite or zero rows, or a negative ``top_n``.
    """
    q = as_matrix(query, "query")
    g = as_matrix(gallery, "gallery", allow_empty=True)
    same_dimension(q, g)
    top_n = integer_at_least(top_n, 0, "top_n")
    nonzero_row_norms(q, "query")
    g_norms = nonzero_row_norms(g, "gallery")
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
        neighbours = top_indices(similarity, n)
        total = q_unit[block] + weighted_unit_sum(g, g_norms, neighbours, np.ones(n))
        out[block] = normalise_rows(total)
    return out
