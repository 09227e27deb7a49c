"""Filtered searches return what an exact filtered search returns: recall@100 >= 0.99 for every
filter kind, from half of the collection down to 0.01 % of it, on Milvus Lite and on a real server.

Clustered synthetic vectors with catalogue-like fields (categories tied to the clusters, skewed brands,
prices with unknowns, stock, a declared attribute and a free JSON one); the exact answer is computed
here with numpy. Both collections use the default index (HNSW on the server, IVF_FLAT on Lite) and
are searched once every row is indexed (the steady state a catalogue is in)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from milvus_servers import clear_server

from clothes_search.settings import MilvusSettings
from db.filters import CatalogFilter
from db.vectors import CropRecord, ItemFields, VectorStore

pytestmark = pytest.mark.slow

ROWS, DIM, QUERIES, LIMIT = 100_000, 256, 20, 100
CATEGORIES = [f"cat{i}" for i in range(10)]
COLOURS = [f"colour{i}" for i in range(12)]
COLLECTION = "recall_test"


@dataclass(frozen=True)
class Catalog:
    vectors: np.ndarray
    category: np.ndarray
    brand: np.ndarray  # 0 is 30 % of the rows, 1..98 share the rest, 99 is 2 rows (0.01 %)
    price: np.ndarray  # NaN: unknown
    in_stock: np.ndarray
    colour: np.ndarray
    pattern: np.ndarray  # a free attribute (JSON): 0 half the rows, 1..9 the rest
    queries: np.ndarray


def make_catalog(seed: int = 7) -> Catalog:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    clusters = rng.integers(0, 40, ROWS)
    vectors = centres[clusters] + 0.6 * rng.standard_normal((ROWS, DIM)).astype(np.float32)
    brand = np.where(rng.random(ROWS) < 0.3, 0, rng.integers(1, 99, ROWS))
    brand[rng.choice(ROWS, 2, replace=False)] = 99
    price = np.round(rng.lognormal(4.0, 0.6, ROWS), 2)
    price[rng.random(ROWS) < 0.05] = np.nan
    pattern = np.where(rng.random(ROWS) < 0.5, 0, rng.integers(1, 10, ROWS))
    query_clusters = rng.integers(0, 40, QUERIES)
    queries = centres[query_clusters] + 0.6 * rng.standard_normal((QUERIES, DIM)).astype(np.float32)
    return Catalog(
        vectors=vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        category=clusters % 10,
        brand=brand,
        price=price,
        in_stock=rng.random(ROWS) < 0.8,
        colour=rng.integers(0, 12, ROWS),
        pattern=pattern,
        queries=queries / np.linalg.norm(queries, axis=1, keepdims=True),
    )


def records(catalog: Catalog) -> list[CropRecord]:
    out = []
    for i in range(ROWS):
        fields = ItemFields(
            category=CATEGORIES[catalog.category[i]],
            brand=f"brand{catalog.brand[i]:02d}",
            price=None if np.isnan(catalog.price[i]) else float(catalog.price[i]),
            in_stock=bool(catalog.in_stock[i]),
            attributes={"color": COLOURS[catalog.colour[i]], "pattern": f"p{catalog.pattern[i]}"},
        )
        out.append(CropRecord(i + 1, catalog.vectors[i], f"sku-{i}", "shirt", fields))
    return out


Mask = Callable[[Catalog], np.ndarray]
FILTERS: list[tuple[str, CatalogFilter, Mask]] = [
    ("in stock (80 %)", CatalogFilter(in_stock=True), lambda c: c.in_stock),
    ("price <= 55 (~50 %)", CatalogFilter(price_max=55), lambda c: c.price <= 55),
    ("pattern p0, JSON (50 %)", CatalogFilter(attributes={"pattern": "p0"}), lambda c: c.pattern == 0),
    ("brand00 (30 %)", CatalogFilter(brands=("brand00",)), lambda c: c.brand == 0),
    (
        "two categories (20 %)",
        CatalogFilter(categories=("cat1", "cat2")),
        lambda c: (c.category == 1) | (c.category == 2),
    ),
    ("category (10 %)", CatalogFilter(categories=("cat3",)), lambda c: c.category == 3),
    ("colour, declared (8 %)", CatalogFilter(attributes={"color": "colour5"}), lambda c: c.colour == 5),
    (
        "category + price 20-80 (~6 %)",
        CatalogFilter(categories=("cat4",), price_min=20, price_max=80),
        lambda c: (c.category == 4) & (c.price >= 20) & (c.price <= 80),
    ),
    (
        "brand00 + in stock + colour (2 %)",
        CatalogFilter(brands=("brand00",), in_stock=True, attributes={"color": "colour1"}),
        lambda c: (c.brand == 0) & c.in_stock & (c.colour == 1),
    ),
    ("brand07 (0.7 %)", CatalogFilter(brands=("brand07",)), lambda c: c.brand == 7),
    (
        "brand07 + pattern p3, JSON (0.07 %)",
        CatalogFilter(brands=("brand07",), attributes={"pattern": "p3"}),
        lambda c: (c.brand == 7) & (c.pattern == 3),
    ),
    ("brand99 (0.01 %)", CatalogFilter(brands=("brand99",)), lambda c: c.brand == 99),
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return make_catalog()


@pytest.fixture(scope="module", params=["lite", "standalone"])
def store(request: pytest.FixtureRequest, catalog: Catalog, tmp_path_factory) -> Iterator[VectorStore]:
    """The catalogue indexed with the default index of each backend, every row in the index."""
    if request.param == "lite":
        uri = str(tmp_path_factory.mktemp("recall") / "milvus.db")
    else:
        uri = request.getfixturevalue("milvus_standalone_uri")
        clear_server(uri)
    with VectorStore(MilvusSettings(uri=uri, timeout_s=120)) as vector_store:
        vector_store.ensure_collection(COLLECTION, DIM)
        batch = records(catalog)
        for start in range(0, ROWS, 2000):
            vector_store.upsert(COLLECTION, batch[start : start + 2000])
        vector_store.flush(COLLECTION)
        vector_store.wait_until_indexed(COLLECTION, timeout_s=600)
        assert vector_store.count(COLLECTION) == ROWS
        yield vector_store


def exact_top(catalog: Catalog, mask: np.ndarray, query: np.ndarray) -> set[int]:
    scores = np.where(mask, catalog.vectors @ query, -np.inf)
    k = min(LIMIT, int(mask.sum()))
    return {int(i) + 1 for i in np.argsort(-scores, kind="stable")[:k]}


@pytest.mark.parametrize(("name", "catalog_filter", "mask"), FILTERS, ids=[f[0] for f in FILTERS])
def test_filtered_recall_is_at_least_099(store: VectorStore, catalog: Catalog, name, catalog_filter, mask):
    rows = mask(catalog)
    assert rows.any()
    found = store.search(COLLECTION, catalog.queries, LIMIT, catalog_filter)
    recalls = []
    for query, hits in zip(catalog.queries, found, strict=True):
        expected = exact_top(catalog, rows, query)
        ids = [hit.id for hit in hits]
        assert len(ids) == len(set(ids)) == min(LIMIT, int(rows.sum()))
        assert all(rows[i - 1] for i in ids), "a hit that does not pass the filter"
        recalls.append(len(set(ids) & expected) / len(expected))
    assert np.mean(recalls) >= 0.99, (name, f"{rows.mean():.4%} of rows", np.round(recalls, 3).tolist())


def test_unfiltered_recall_is_at_least_099(store: VectorStore, catalog: Catalog):
    found = store.search(COLLECTION, catalog.queries, LIMIT)
    everything = np.ones(ROWS, dtype=bool)
    recalls = [
        len({h.id for h in hits} & exact_top(catalog, everything, q)) / LIMIT
        for q, hits in zip(catalog.queries, found, strict=True)
    ]
    assert np.mean(recalls) >= 0.99, np.round(recalls, 3).tolist()
