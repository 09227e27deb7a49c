"""The vector store's records and the checks and conversions of their fields.

Split from :mod:`db.vectors` (the adapter itself); import the public names from there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from clothes_search.errors import ClothesSearchError
from clothes_search.field_limits import BRAND_BYTES, CATEGORY_BYTES, SKU_BYTES
from db.filters import forbidden_character, string_literal

T = TypeVar("T")
TEXT_LIMITS = {  # VARCHAR bytes
    "item_key": SKU_BYTES,
    "crop_category": CATEGORY_BYTES,
    "category": CATEGORY_BYTES,
    "brand": BRAND_BYTES,
}


class VectorStoreError(ClothesSearchError):
    """The vector store rejected a request or failed."""

    kind = "vector_store"


class VectorStoreUnavailableError(VectorStoreError):
    """The vector store cannot be reached (refused, timed out): retry later."""

    kind = "vector_store_unavailable"


@dataclass
class ItemFields:
    """The item's filterable fields, denormalised onto each of its crop rows."""

    category: str
    brand: str
    price: float | None = None  # NULL in Milvus when unknown
    in_stock: bool = True
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class CropRecord:
    """One crop's vector and what is searched and filtered with it."""

    id: int
    vector: np.ndarray
    item_key: str
    crop_category: str
    fields: ItemFields
    written_at: int = 0  # epoch seconds; 0: the store sets the current time


@dataclass
class VectorHit:
    """A search result: the crop id and its similarity (higher is better)."""

    id: int
    score: float
    item_key: str
    crop_category: str
    vector: np.ndarray | None = None  # the stored vector, when the search asked for it


@dataclass
class CollectionInfo:
    """What ``clothes-search milvus stats`` reports about a collection."""

    name: str
    dim: int
    rows: int
    index_type: str
    metric_type: str
    partition_key: str | None
    aliases: list[str]


def chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def ids_literal(ids: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(i)) for i in ids) + "]"


def keys_literal(keys: Sequence[str]) -> str:
    return "[" + ", ".join(string_literal(check_text(k, "item_key")) for k in keys) + "]"


def check_text(value: object, name: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or not (value or empty_ok):
        raise VectorStoreError(f"{name} must be a {'' if empty_ok else 'non-empty '}string, got {value!r}")
    if len(value.encode("utf-8", "surrogatepass")) > TEXT_LIMITS[name]:
        raise VectorStoreError(f"{name} {value[:40]!r}... is longer than {TEXT_LIMITS[name]} bytes")
    bad = forbidden_character(value)
    if bad is not None:
        raise VectorStoreError(f"{name} {value!r} contains the control character U+{ord(bad):04X}")
    return value


def check_vectors(vectors: object, dim: int | None, what: str) -> np.ndarray:
    """A C-contiguous float32 (n, d) matrix of finite values, ``d == dim`` when known."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise VectorStoreError(f"{what}: vectors of different lengths or not numbers ({exc})") from exc
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise VectorStoreError(f"{what}: expected an (n, d) array of vectors, got shape {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise VectorStoreError(f"{what}: vectors have dimension {matrix.shape[1]}, the collection {dim}")
    if not np.isfinite(matrix).all():
        raise VectorStoreError(f"{what}: vectors contain NaN or infinite values")
    return np.ascontiguousarray(matrix)
