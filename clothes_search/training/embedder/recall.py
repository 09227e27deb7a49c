"""Recall@k of consumer-to-shop retrieval: consumer garment crops as queries, shop crops as the gallery.

This mirrors ``clothes-search eval --gt-boxes`` without re-ranking: cosine similarity between L2-normalised
vectors, and a query counts as found at ``k`` when one of its ``k`` nearest gallery crops has its identity
``(pair_id, style)``. Every query is in the denominator, including those whose identity is absent from the
gallery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from clothes_search.training.embedder.crops import GarmentCrop, Identity

DEFAULT_KS = (1, 10, 20)
#: a function from RGB crops to L2-normalised float32 vectors (N, d)
EmbedCrops = Callable[[Sequence[Image.Image]], np.ndarray]


def recall_at_k(
    query_vectors: np.ndarray,
    query_labels: Sequence[object],
    gallery_vectors: np.ndarray,
    gallery_labels: Sequence[object | None],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[int, float]:
    """Fraction of queries with a same-label gallery entry among their ``k`` most similar ones.

    Args:
        query_vectors: (Q, d) unit-norm rows.
        query_labels: Q labels.
        gallery_vectors: (G, d) unit-norm rows.
        gallery_labels: G labels; None never matches (a distractor).
        ks: the cut-offs, each >= 1 (a cut-off above G means the whole gallery).
    Returns:
        ``{k: recall}``. Ties in similarity keep the gallery order (a stable sort).
    """
    if len(query_vectors) != len(query_labels) or len(gallery_vectors) != len(gallery_labels):
        raise ValueError("each vector needs one label")
    if len(query_labels) == 0:
        raise ValueError("no queries")
    similarity = np.asarray(query_vectors, dtype=np.float64) @ np.asarray(gallery_vectors, dtype=np.float64).T
    order = np.argsort(-similarity, axis=1, kind="stable")
    gallery = np.array([label is not None for label in gallery_labels])
    first_hit = np.full(len(query_labels), np.inf)
    for row, label in enumerate(query_labels):
        hits = [
            rank
            for rank, column in enumerate(order[row])
            if gallery[column] and gallery_labels[column] == label
        ]
        if hits:
            first_hit[row] = hits[0] + 1
    return {k: float(np.mean(first_hit <= k)) for k in ks}


def split_recall(
    vectors: np.ndarray, crops: Sequence[GarmentCrop], ks: Sequence[int] = DEFAULT_KS
) -> dict[int, float]:
    """Recall@k on a split's crops given their vectors (row i is ``crops[i]``'s): consumer crops with a
    style are the queries, every shop crop is the gallery."""
    if len(vectors) != len(crops):
        raise ValueError(f"{len(vectors)} vectors for {len(crops)} crops")
    queries = [i for i, crop in enumerate(crops) if crop.source == "user" and crop.identity is not None]
    gallery = [i for i, crop in enumerate(crops) if crop.source == "shop"]
    if not queries or not gallery:
        raise ValueError("the split needs consumer garments with a style and shop garments")
    return recall_at_k(
        vectors[queries],
        [crops[i].identity for i in queries],
        vectors[gallery],
        [crops[i].identity for i in gallery],
        ks,
    )


def crop_recall(
    embed: EmbedCrops, crops: Sequence[GarmentCrop], ks: Sequence[int] = DEFAULT_KS
) -> dict[int, float]:
    """Recall@k of ``embed`` (crops -> unit vectors) on a split's crops, as :func:`split_recall`."""
    return split_recall(embed([crop.crop for crop in crops]), crops, ks)


def format_recall(recall: dict[int, float]) -> str:
    return ", ".join(f"recall@{k} {value:.3f}" for k, value in sorted(recall.items()))


__all__ = [
    "DEFAULT_KS",
    "EmbedCrops",
    "Identity",
    "crop_recall",
    "format_recall",
    "recall_at_k",
    "split_recall",
]
