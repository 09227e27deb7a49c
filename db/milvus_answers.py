"""Milvus search answers as :class:`VectorHit` lists, with the hits' vectors read in bulk.

pymilvus decodes a returned float vector hit by hit into a Python list (about 0.1 ms for a 2560-d
vector: most of a re-ranking request's time at K' = 100). Its answers keep the protobuf field data
of every query together, a packed float array that numpy reads in one step, so the vectors are
sliced from there. Where a pymilvus version keeps its answer otherwise (the attributes used here
are not public), the per-hit values are used: slower, the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from pymilvus import DataType

from db.vector_records import VectorHit

VECTOR_FIELD = "vector"


def answer_hits(answer: Iterable[Any], negate: bool, with_vectors: bool) -> list[list[VectorHit]]:
    """Per query of a ``MilvusClient.search`` answer, its hits (``negate``: scores are ``-distance``)."""
    sign = -1.0 if negate else 1.0
    flat_vectors: dict[int, np.ndarray] = {}  # id(field data) -> all queries' vectors, read once
    out = []
    for hits in answer:
        vectors = _bulk_vectors(hits, flat_vectors) if with_vectors else None
        if with_vectors and vectors is None:
            out.append([_hit(hit, sign) for hit in hits])
            continue
        # with the vectors in hand, the raw items spare pymilvus' per-hit decoding of them
        raw = hits.get_raw_item if vectors is not None else hits.__getitem__
        out.append([_hit(raw(i), sign, None if vectors is None else vectors[i]) for i in range(len(hits))])
    return out


def _hit(hit: dict[str, Any], sign: float, vector: np.ndarray | None = None) -> VectorHit:
    entity = hit.get("entity") or {}
    if vector is None and entity.get(VECTOR_FIELD) is not None:
        vector = np.asarray(entity[VECTOR_FIELD], dtype=np.float32)
    return VectorHit(
        int(hit["id"]),
        sign * float(hit["distance"]),
        entity.get("item_key", ""),
        entity.get("crop_category", ""),
        vector,
    )


def _bulk_vectors(hits: Any, cache: dict[int, np.ndarray]) -> np.ndarray | None:
    """``(len(hits), d)`` float32: this query's stored vectors, or None (read them hit by hit)."""
    start = getattr(hits, "start", None)
    fields = getattr(hits, "lazy_field_data", None)
    if not isinstance(start, int) or fields is None or not hasattr(hits, "get_raw_item"):
        return None
    for data in fields:
        if data.field_name != VECTOR_FIELD:
            continue
        if data.type != DataType.FLOAT_VECTOR or len(data.valid_data):  # nullable: rows are not aligned
            return None
        dim = int(data.vectors.dim)
        if id(data) not in cache:
            cache[id(data)] = np.asarray(data.vectors.float_vector.data, dtype=np.float32)
        flat = cache[id(data)]
        count = len(hits)
        if dim <= 0 or flat.size < (start + count) * dim:
            return None
        return flat[start * dim : (start + count) * dim].reshape(count, dim)
    return None
