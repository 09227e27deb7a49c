"""How a filtered search returns what an exact filtered search returns (recall ≥ 0.99, every filter).

ANN indexes lose matches under selective filters: an HNSW graph restricted to the rows that pass a
filter falls apart into pieces the search cannot reach. What each engine does about it (measured
with ``clothes-search bench milvus``, see README "Filtered recall"):

- **Milvus server, HNSW** (knowhere): a search whose filter keeps at most a few percent of the rows
  is answered by brute force over those rows (exact); between that and ~30 % a graph search with the
  default ``ef`` loses matches (a filter unrelated to the vectors, e.g. a colour, cuts the graph);
  above, it is accurate. So the filter's rows are counted first (a scalar ``count(*)``, milliseconds,
  cached) and the search is planned by their share of the collection and their number:
  ``share <= exact_fraction``: one search (the engine's exact path); ``share < ann_min_fraction``:
  split into ``ceil(share / exact_fraction)`` sub-searches on disjoint ``shard`` ranges (each one on
  the exact path) whose hits are merged; otherwise one graph search with ``ef >= limit``. The exact
  path costs time per matching row (measured at 1M x 256-d on 2 cores: ~8 ms + 0.27 µs a row), the
  graph much less: with ``split_max_rows`` set, a filter keeping more rows than that uses one graph
  search with ``ef`` raised as the filter narrows (``filtered_ef_factor x limit / share``) instead:
  faster at a million rows, at a measured recall of 0.987–0.998 instead of 1 (README "Filtered
  recall"). Unset (the default), recall comes first.
- **IVF indexes** (the Milvus Lite default, ``IVF_FLAT``; ``IVF_SQ8``): a filtered search scans
  every list (``nprobe = nlist``), which is exact over the rows that pass, at the cost of the
  filter's share of the collection. Unfiltered searches scan ``ivf_nprobe`` lists.
- **Milvus Lite, HNSW** (faiss, no brute-force path; counting is slow there): filters keeping less
  than :data:`LITE_EXACT_FRACTION` are answered exactly from the rows themselves (their vectors
  fetched and compared here), larger ones with ``ef`` scaled by the share.
- **FLAT**: always exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clothes_search.settings import MilvusSettings
from db.vector_records import VectorHit
from db.vector_schema import SHARDS, CollectionLayout, ServerInfo

MAX_TOP_K = 16384
LITE_EXACT_FRACTION = 0.05  # Milvus Lite + HNSW: below this share, compare the rows' vectors here
ANN_EF_FACTOR = 2.0  # Milvus Lite + HNSW: ef = factor x limit / share (measured: >= 0.998 at 5 %)


@dataclass(frozen=True)
class SearchPlan:
    """The Milvus searches that together answer one filtered (or unfiltered) search."""

    expressions: list[str]  # one search per expression, hits merged (sub-searches of a split filter)
    params: dict[str, Any] = field(default_factory=dict)  # search_params["params"]
    exact_rows: bool = False  # compare the matching rows' vectors here instead of searching
    empty: bool = False  # nothing matches: no search at all


def resolved_index_type(settings: MilvusSettings, server: ServerInfo) -> str:
    """The vector index of a new collection: ``auto`` is HNSW on a server, IVF_FLAT on Milvus Lite."""
    if settings.index_type != "auto":
        return settings.index_type
    return "IVF_FLAT" if server.lite else "HNSW"


def index_build_params(settings: MilvusSettings, index_type: str) -> dict[str, Any]:
    return {
        "HNSW": {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction},
        "IVF_FLAT": {"nlist": settings.ivf_nlist},
        "IVF_SQ8": {"nlist": settings.ivf_nlist},
    }.get(index_type, {})


def needs_count(index_type: str, expression: str) -> bool:
    """Whether planning this search needs the filter's share of the collection."""
    return bool(expression) and index_type == "HNSW"


def plan_search(
    settings: MilvusSettings,
    index_type: str,
    server: ServerInfo,
    layout: CollectionLayout,
    expression: str,
    limit: int,
    matching: int | None = None,
    total: int | None = None,
) -> SearchPlan:
    """The searches for one request; ``matching`` / ``total`` are counted when :func:`needs_count`."""
    if index_type in ("IVF_FLAT", "IVF_SQ8"):
        nprobe = settings.ivf_nlist if expression else min(settings.ivf_nprobe, settings.ivf_nlist)
        return SearchPlan([expression], {"nprobe": nprobe})
    if index_type != "HNSW":  # FLAT, AUTOINDEX: the engine's own search
        return SearchPlan([expression])
    ef = max(settings.search_ef, limit)
    if not expression:
        return SearchPlan([""], {"ef": ef})
    if matching is None or total is None:
        raise ValueError("an HNSW filtered search is planned with the filter's row count")
    if matching == 0:
        return SearchPlan([], empty=True)
    share = matching / max(total, 1)
    if server.lite:
        if share < LITE_EXACT_FRACTION:
            return SearchPlan([expression], exact_rows=True)
        return SearchPlan(
            [expression], {"ef": min(MAX_TOP_K, max(ef, math.ceil(ANN_EF_FACTOR * limit / share)))}
        )
    if share <= settings.exact_fraction or share >= settings.ann_min_fraction:
        return SearchPlan([expression], {"ef": ef})
    if layout.has_shard and (settings.split_max_rows is None or matching <= settings.split_max_rows):
        parts = min(SHARDS, math.ceil(share / settings.exact_fraction))
        return SearchPlan(shard_expressions(expression, parts), {"ef": ef})
    return SearchPlan([expression], {"ef": filtered_ef(settings, limit, share)})


def filtered_ef(settings: MilvusSettings, limit: int, share: float) -> int:
    """A server's graph ``ef`` for a filter keeping ``share`` of the rows: wider as the filter narrows."""
    wanted = math.ceil(settings.filtered_ef_factor * limit / max(share, 1e-9))
    return min(MAX_TOP_K, max(settings.search_ef, limit, wanted))


def shard_expressions(expression: str, parts: int) -> list[str]:
    """``expression`` restricted to each of ``parts`` disjoint, covering ranges of the shard field."""
    bounds = np.linspace(0, SHARDS, parts + 1).round().astype(int)
    return [
        f"({expression}) and (shard >= {low}) and (shard < {high})"
        for low, high in itertools.pairwise(bounds)
        if high > low
    ]


def merge_hits(per_search: Sequence[list[list[VectorHit]]], limit: int) -> list[list[VectorHit]]:
    """Per query, the best ``limit`` hits of several searches over disjoint rows (highest score first)."""
    if len(per_search) == 1:
        return per_search[0]
    merged = []
    for rows in zip(*per_search, strict=True):
        hits = [hit for row in rows for hit in row]
        hits.sort(key=lambda h: -h.score)
        merged.append(hits[:limit])
    return merged


def exact_scores(metric: str, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``(Q, N)`` scores (higher is better) as the index reports them: cosine, inner product, -L2²."""
    if metric == "COSINE":
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        norms = np.linalg.norm(vectors, axis=1)
        return (q @ vectors.T) / np.where(norms > 0, norms, 1.0)[None, :]
    if metric == "IP":
        return queries @ vectors.T
    squared = (queries**2).sum(axis=1)[:, None] - 2 * queries @ vectors.T + (vectors**2).sum(axis=1)[None, :]
    return -squared
