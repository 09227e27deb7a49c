"""The vector store against real Milvus: embedded Milvus Lite files, the Lite server shared by two
processes, and a real Milvus standalone server (each store test runs on Lite and on the standalone)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from milvus_servers import clear_server

from clothes_search.settings import MilvusSettings
from db.filters import CatalogFilter, InvalidFilterError
from db.vectors import (
    CropRecord,
    ItemFields,
    VectorHit,
    VectorStore,
    VectorStoreError,
    VectorStoreUnavailableError,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DIM = 8
COLLECTION = "crops_test"


def _settings(uri: str, **overrides: object) -> MilvusSettings:
    return MilvusSettings(**{"uri": uri, "index_type": "FLAT", "timeout_s": 20, **overrides})


@pytest.fixture(params=["lite", "standalone"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """A store with an empty collection: in a Milvus Lite file, or on the standalone server (cleared)."""
    if request.param == "lite":
        settings = _settings(str(tmp_path / "milvus.db"))
    else:
        uri = request.getfixturevalue("milvus_standalone_uri")
        clear_server(uri, keep=COLLECTION)
        settings = _settings(uri, consistency="Strong")  # a test reads what it just wrote
    with VectorStore(settings) as vector_store:
        vector_store.ensure_collection(COLLECTION, DIM)
        yield vector_store


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    """A deterministic random unit vector near (1, 1, ..., 1), so every row is a candidate."""
    rng = np.random.default_rng(seed)
    vector = np.ones(dim, dtype=np.float32) + 0.3 * rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def fields(
    category: str = "top", brand: str = "acme", price: float | None = 10.0, **attributes: object
) -> ItemFields:
    return ItemFields(category=category, brand=brand, price=price, in_stock=True, attributes=dict(attributes))


def crops(item_key: str, ids: Sequence[int], item_fields: ItemFields | None = None) -> list[CropRecord]:
    item_fields = item_fields or fields()
    return [CropRecord(i, unit(i), item_key, "shirt", item_fields) for i in ids]


def ids_of(store: VectorStore, item_key: str) -> set[int]:
    return store.crop_ids(COLLECTION, [item_key]).get(item_key, set())


def keys(hits: list[VectorHit]) -> set[str]:
    return {hit.item_key for hit in hits}


def search_keys(store: VectorStore, catalog_filter: CatalogFilter | None, name: str = COLLECTION) -> set[str]:
    return keys(store.search(name, unit(0)[None, :], limit=100, filter=catalog_filter)[0])


# -- writes -------------------------------------------------------------------------------------


def test_ensure_collection_is_idempotent(store: VectorStore) -> None:
    assert store.ensure_collection(COLLECTION, DIM) is False
    assert store.ensure_collection("crops_other", DIM) is True
    assert store.has_collection("crops_other")
    assert store.collection_name("abc123") == "crops_abc123"
    with pytest.raises(VectorStoreError, match="dimension 8, not 16"):
        store.ensure_collection(COLLECTION, 16)


def replace_item_crops(store: VectorStore, collection: str, key: str, records: list[CropRecord]) -> None:
    """What ingestion does for one item (db.indexing): upsert its new crops, then delete its others."""
    store.upsert(collection, records)
    store.delete_items_except(collection, [key], [r.id for r in records])


def test_upsert_then_delete_others_replaces_the_items_crops(store: VectorStore) -> None:
    replace_item_crops(store, COLLECTION, "item-a", crops("item-a", [1, 2, 3]))
    replace_item_crops(store, COLLECTION, "item-b", crops("item-b", [10, 11]))
    assert ids_of(store, "item-a") == {1, 2, 3}

    replace_item_crops(store, COLLECTION, "item-a", crops("item-a", [3, 4]))

    assert ids_of(store, "item-a") == {3, 4}
    assert ids_of(store, "item-b") == {10, 11}
    assert set(store.get_vectors(COLLECTION, [1, 2, 3, 4, 10, 11])) == {3, 4, 10, 11}
    assert store.count(COLLECTION) == 4


def test_upserting_the_same_records_again_keeps_one_copy(store: VectorStore) -> None:
    records = crops("item-a", [1, 2])
    replace_item_crops(store, COLLECTION, "item-a", records)
    replace_item_crops(store, COLLECTION, "item-a", records)
    store.upsert(COLLECTION, records)
    store.flush(COLLECTION)
    assert store.count(COLLECTION) == 2
    hits = store.search(COLLECTION, unit(1)[None, :], limit=10)[0]
    assert sorted(hit.id for hit in hits) == [1, 2]


def test_delete_items_and_ids(store: VectorStore) -> None:
    store.upsert(COLLECTION, crops("item-a", [1, 2]) + crops("item-b", [3]) + crops("item-c", [4, 5]))
    assert store.delete_items(COLLECTION, ["item-a", "unknown"]) == 2
    assert store.delete_ids(COLLECTION, [4, 999]) == 1
    assert store.delete_ids(COLLECTION, []) == 0
    assert store.count(COLLECTION) == 2
    assert search_keys(store, None) == {"item-b", "item-c"}
    assert store.delete_items_except(COLLECTION, ["item-b", "item-c"], keep_ids=[5]) == 1
    assert store.get_vectors(COLLECTION, [1, 2, 3, 4, 5]).keys() == {5}


def test_written_at_is_set_when_zero(store: VectorStore) -> None:
    before = int(time.time())
    records = crops("item-a", [1])
    records.append(CropRecord(2, unit(2), "item-a", "shirt", fields(), written_at=12345))
    store.upsert(COLLECTION, records)
    rows = {
        row_id: written for batch in store.iter_rows(COLLECTION, batch_size=1) for row_id, _, written in batch
    }
    assert rows[1] >= before
    assert rows[2] == 12345


def test_vectors_read_back_equal_what_was_written(store: VectorStore) -> None:
    records = crops("item-a", [1, 2, 3])
    raw = CropRecord(
        4, np.linspace(-3, 7, DIM, dtype=np.float64), "item-a", "shirt", fields()
    )  # not unit, f64
    store.upsert(COLLECTION, [*records, raw])
    vectors = store.get_vectors(COLLECTION, [1, 2, 3, 4, 77])
    assert set(vectors) == {1, 2, 3, 4}
    for record in [*records, raw]:
        assert vectors[record.id].dtype == np.float32
        np.testing.assert_allclose(vectors[record.id], record.vector.astype(np.float32), atol=1e-6)


def test_each_search_hit_carries_its_own_stored_vector(store: VectorStore) -> None:
    # several queries in one call: each query's hits are sliced from the one answer the server sent
    written = {r.id: r.vector for r in crops("item-a", range(1, 13)) + crops("item-b", range(20, 26))}
    store.upsert(COLLECTION, crops("item-a", range(1, 13)) + crops("item-b", range(20, 26)))
    queries = np.stack([unit(2), unit(21), unit(7)])
    answer = store.search(COLLECTION, queries, limit=6, with_vectors=True)
    assert [len(hits) for hits in answer] == [6, 6, 6]
    assert [hits[0].id for hits in answer] == [2, 21, 7]
    for query, hits in zip(queries, answer, strict=True):
        for hit in hits:
            assert hit.vector is not None and hit.vector.dtype == np.float32
            np.testing.assert_allclose(hit.vector, written[hit.id], atol=1e-6)
            assert hit.score == pytest.approx(float(hit.vector @ query), abs=1e-5)  # cosine of unit rows
    plain = store.search(COLLECTION, queries, limit=6)
    assert [[h.id for h in hits] for hits in plain] == [[h.id for h in hits] for hits in answer]
    assert all(h.vector is None and h.item_key for hits in plain for h in hits)


def test_invalid_vectors_are_rejected(store: VectorStore) -> None:
    with pytest.raises(VectorStoreError, match="dimension 4"):
        store.upsert(COLLECTION, [CropRecord(1, np.ones(4, dtype=np.float32), "item-a", "shirt", fields())])
    with pytest.raises(VectorStoreError, match="NaN or infinite"):
        store.upsert(
            COLLECTION, [CropRecord(1, np.full(DIM, np.nan, dtype=np.float32), "a", "shirt", fields())]
        )
    with pytest.raises(VectorStoreError, match="dimension 4"):
        store.search(COLLECTION, np.ones((1, 4), dtype=np.float32), limit=5)
    with pytest.raises(VectorStoreError, match="NaN or infinite"):
        store.search(COLLECTION, np.full((1, DIM), np.inf, dtype=np.float32), limit=5)
    with pytest.raises(VectorStoreError, match=r"\(n, d\)"):
        store.search(COLLECTION, unit(1), limit=5)  # one query must be a (1, d) matrix
    with pytest.raises(VectorStoreError, match="limit"):
        store.search(COLLECTION, unit(1)[None, :], limit=0)
    with pytest.raises(VectorStoreError, match="duplicate"):
        store.upsert(COLLECTION, crops("item-a", [1, 1]))
    with pytest.raises(VectorStoreError, match="price"):
        store.upsert(COLLECTION, crops("item-a", [1], fields(price=float("nan"))))
    assert store.count(COLLECTION) == 0


def test_dimension_mismatch_through_an_alias_is_a_vector_store_error(store: VectorStore) -> None:
    store.upsert(COLLECTION, crops("item-a", [1]))
    store.point_alias("crops_live", COLLECTION)
    with pytest.raises(VectorStoreError, match="dim"):
        store.search("crops_live", np.ones((1, 3), dtype=np.float32), limit=5)


# -- filtered search ----------------------------------------------------------------------------

CATALOG = {
    "shirt-red": ItemFields("top", "acme", 20.0, True, {"color": "red", "size": 40}),
    "shirt-blue": ItemFields("top", "zeta", 35.0, True, {"color": "blue", "size": 42}),
    "jeans": ItemFields("bottom", "acme", 50.0, False, {"color": "blue", "size": 32}),
    "skirt": ItemFields("bottom", "Ünïcode “Brand”", None, True, {"color": "red", "lined": True}),
    "dress": ItemFields("dress", "zeta", 120.5, False, {"color": "black"}),
}


def _load_catalog(store: VectorStore, name: str = COLLECTION) -> None:
    for n, (key, item_fields) in enumerate(CATALOG.items()):
        replace_item_crops(store, name, key, crops(key, [10 * n + 1, 10 * n + 2], item_fields))


@pytest.mark.parametrize(
    ("catalog_filter", "expected"),
    [
        (None, set(CATALOG)),
        (CatalogFilter(), set(CATALOG)),
        (CatalogFilter(categories=("bottom",)), {"jeans", "skirt"}),
        (CatalogFilter(categories=("top", "dress")), {"shirt-red", "shirt-blue", "dress"}),
        (CatalogFilter(brands=("acme",)), {"shirt-red", "jeans"}),
        (CatalogFilter(brands=("Ünïcode “Brand”",)), {"skirt"}),
        (CatalogFilter(price_min=30), {"shirt-blue", "jeans", "dress"}),  # unknown price never matches
        (CatalogFilter(price_max=35), {"shirt-red", "shirt-blue"}),
        (CatalogFilter(price_min=20, price_max=50), {"shirt-red", "shirt-blue", "jeans"}),
        (CatalogFilter(in_stock=True), {"shirt-red", "shirt-blue", "skirt"}),
        (CatalogFilter(in_stock=False), {"jeans", "dress"}),
        (CatalogFilter(attributes={"color": "blue"}), {"shirt-blue", "jeans"}),
        (CatalogFilter(attributes={"size": 42}), {"shirt-blue"}),
        (CatalogFilter(attributes={"lined": True}), {"skirt"}),
        (CatalogFilter(attributes={"color": "red", "size": 40}), {"shirt-red"}),
        (CatalogFilter(categories=("bottom",), in_stock=True), {"skirt"}),
        (CatalogFilter(brands=("zeta",), attributes={"color": "black"}), {"dress"}),
        (CatalogFilter(categories=("top",), brands=("acme",), price_max=25, in_stock=True), {"shirt-red"}),
        (CatalogFilter(categories=("shoes",)), set()),
    ],
)
def test_filtered_search_honours_every_field(
    store: VectorStore, catalog_filter: CatalogFilter | None, expected: set[str]
) -> None:
    _load_catalog(store)
    hits = store.search(COLLECTION, np.stack([unit(0), unit(1)]), limit=100, filter=catalog_filter)
    assert len(hits) == 2
    for per_query in hits:
        assert keys(per_query) == expected
        assert len(per_query) == 2 * len(expected)  # every crop of every matching item
        scores = [hit.score for hit in per_query]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 <= score <= 1.0 + 1e-6 for score in scores)


@pytest.mark.parametrize(
    "catalog_filter",
    [
        CatalogFilter(brands=('acme" or brand != "',)),
        CatalogFilter(brands=('x" or 1==1 or "',)),
        CatalogFilter(categories=('top") or (category != "',)),
        CatalogFilter(categories=("top\\", 'or 1==1 or "')),
        CatalogFilter(attributes={"color": 'red" or attributes["color"] != "'}),
        CatalogFilter(attributes={"color": "red\n) or (true"}),
    ],
)
def test_injection_attempts_match_nothing(store: VectorStore, catalog_filter: CatalogFilter) -> None:
    _load_catalog(store)
    assert search_keys(store, catalog_filter) == set()


def test_injection_through_attribute_names_is_rejected() -> None:
    with pytest.raises(InvalidFilterError) as caught:
        CatalogFilter(attributes={'color"] or [1': "x"})
    assert caught.value.parameter == "attributes"


def test_hnsw_with_category_partition_key(tmp_path: Path) -> None:
    settings = _settings(
        str(tmp_path / "hnsw.db"), index_type="HNSW", partition_key="category", num_partitions=4
    )
    with VectorStore(settings) as store:
        assert store.ensure_collection(COLLECTION, DIM)
        _load_catalog(store)
        store.flush(COLLECTION)
        info = store.describe(COLLECTION)
        assert (info.index_type, info.metric_type, info.partition_key, info.rows) == (
            "HNSW",
            "COSINE",
            "category",
            10,
        )
        assert search_keys(store, CatalogFilter(categories=("bottom",))) == {"jeans", "skirt"}
        assert search_keys(store, CatalogFilter(price_min=20, price_max=50)) == {
            "shirt-red",
            "shirt-blue",
            "jeans",
        }
        best = store.search(COLLECTION, unit(21)[None, :], limit=1)[0][0]
        assert (best.id, best.item_key, best.crop_category) == (21, "jeans", "shirt")
        assert best.score == pytest.approx(1.0, abs=1e-4)


def test_l2_scores_are_higher_for_closer_vectors(tmp_path: Path) -> None:
    with VectorStore(_settings(str(tmp_path / "l2.db"), metric_type="L2")) as store:
        store.ensure_collection(COLLECTION, DIM)
        store.upsert(COLLECTION, crops("item-a", [1, 2, 3]))
        hits = store.search(COLLECTION, unit(2)[None, :], limit=3)[0]
        assert hits[0].id == 2
        assert hits[0].score == pytest.approx(0.0, abs=1e-5)
        assert hits[0].score > hits[1].score >= hits[2].score


def test_update_item_fields_changes_filters_not_vectors(store: VectorStore) -> None:
    _load_catalog(store)
    before = store.get_vectors(COLLECTION, [21, 22])
    updated = ItemFields("outerwear", "newco", None, True, {"color": "green"})

    assert store.update_item_fields(COLLECTION, "jeans", updated) == 2
    assert store.update_item_fields(COLLECTION, "unknown", updated) == 0

    assert search_keys(store, CatalogFilter(categories=("bottom",))) == {"skirt"}
    assert search_keys(store, CatalogFilter(categories=("outerwear",), in_stock=True)) == {"jeans"}
    assert search_keys(store, CatalogFilter(attributes={"color": "green"})) == {"jeans"}
    assert search_keys(store, CatalogFilter(price_min=0)) == {"shirt-red", "shirt-blue", "dress"}
    after = store.get_vectors(COLLECTION, [21, 22])
    for crop_id in (21, 22):
        np.testing.assert_array_equal(after[crop_id], before[crop_id])
    stored = store.item_fields(COLLECTION, ["jeans", "skirt", "unknown"])
    assert stored == {"jeans": updated, "skirt": CATALOG["skirt"]}


def test_item_fields_round_trip_including_unknown_price(store: VectorStore) -> None:
    _load_catalog(store)
    assert store.item_fields(COLLECTION, list(CATALOG)) == CATALOG
    assert store.item_fields(COLLECTION, []) == {}


# -- collections, aliases, reopening ------------------------------------------------------------


def test_alias_search_follows_the_swap(store: VectorStore) -> None:
    store.ensure_collection("crops_b", DIM)
    store.upsert(COLLECTION, crops("old-item", [1, 2]))
    store.upsert("crops_b", crops("new-item", [3]))
    assert store.resolve_alias("crops_live") is None

    store.point_alias("crops_live", COLLECTION)
    assert store.resolve_alias("crops_live") == COLLECTION
    assert search_keys(store, None, name="crops_live") == {"old-item"}

    store.point_alias("crops_live", "crops_b")
    store.point_alias("crops_live", "crops_b")  # idempotent
    assert store.resolve_alias("crops_live") == "crops_b"
    assert search_keys(store, None, name="crops_live") == {"new-item"}

    with pytest.raises(VectorStoreError, match="point them elsewhere"):
        store.drop_collection("crops_b")
    assert store.drop_collection(COLLECTION) is True
    assert store.drop_collection(COLLECTION) is False
    assert store.list_collections() == ["crops_b"]


def test_reopened_collection_is_loaded_on_demand(tmp_path: Path) -> None:
    path = str(tmp_path / "reopen.db")
    with VectorStore(_settings(path)) as store:
        store.ensure_collection(COLLECTION, DIM)
        store.upsert(COLLECTION, crops("item-a", [1, 2]))
        store.flush(COLLECTION)
    with VectorStore(_settings(path)) as store:  # a fresh embedded server: the collection is released
        assert search_keys(store, None) == {"item-a"}
        assert store.count(COLLECTION) == 2


def test_lite_file_used_by_another_process_gives_an_actionable_error(tmp_path: Path) -> None:
    path = str(tmp_path / "locked.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, path], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with (
            pytest.raises(VectorStoreError, match="one process per file") as caught,
            VectorStore(_settings(path)) as s,
        ):
            s.has_collection(COLLECTION)
        assert "clothes-search milvus serve" in str(caught.value)
        assert not isinstance(caught.value, VectorStoreUnavailableError)
    finally:
        holder.kill()
        holder.wait()


HOLD_SCRIPT = """
import sys, time
from pymilvus import MilvusClient
MilvusClient(sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""


# -- unreachable servers ------------------------------------------------------------------------


def test_refused_connection_raises_unavailable_quickly() -> None:
    store = VectorStore(MilvusSettings(uri="http://127.0.0.1:1", timeout_s=1.0))  # connects lazily
    start = time.monotonic()
    with pytest.raises(VectorStoreUnavailableError) as caught:
        store.search(COLLECTION, unit(0)[None, :], limit=3)
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert "http://127.0.0.1:1" in message and "unavailable" in message and "milvus serve" in message
    assert caught.value.kind == "vector_store_unavailable"
    store.close()


def test_silent_server_times_out_as_unavailable() -> None:
    with socket.socket() as silent:  # accepts TCP connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with VectorStore(MilvusSettings(uri=f"http://127.0.0.1:{port}", timeout_s=0.5)) as store:
            start = time.monotonic()
            with pytest.raises(VectorStoreUnavailableError, match="unavailable"):
                store.has_collection(COLLECTION)
            assert time.monotonic() - start < 5


def test_credentials_are_not_shown_in_messages() -> None:
    store = VectorStore(MilvusSettings(uri="http://user:secret@127.0.0.1:1", timeout_s=1.0))
    assert store.uri == "http://127.0.0.1:1"
    with pytest.raises(VectorStoreUnavailableError) as caught:
        store.has_collection(COLLECTION)
    assert "secret" not in str(caught.value)


# -- the Lite server shared by two processes ----------------------------------------------------

CHILD_SCRIPT = """
import json, sys
import numpy as np
from clothes_search.settings import MilvusSettings
from db.filters import CatalogFilter
from db.vectors import CropRecord, ItemFields, VectorStore

uri, collection, action = sys.argv[1:4]
with VectorStore(MilvusSettings(uri=uri, index_type="FLAT", timeout_s=20)) as store:
    if action == "write":
        store.ensure_collection(collection, 8)
        fields = ItemFields("top", "child-brand", 9.5, True, {"origin": "child"})
        vectors = np.eye(8, dtype=np.float32)
        records = [CropRecord(100 + i, vectors[i], "child-item", "shirt", fields) for i in range(2)]
        store.upsert(collection, records)
        print(json.dumps({"count": store.count(collection)}))
    else:
        query = np.eye(8, dtype=np.float32)[3:4]
        hits = store.search(collection, query, 10, CatalogFilter(attributes={"origin": "parent"}))[0]
        print(json.dumps([[h.id, h.item_key, h.score] for h in hits]))
"""


def _child(uri: str, collection: str, action: str) -> object:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT, uri, collection, action],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_child_process_writes_and_this_process_reads(milvus_server_uri: str) -> None:
    assert _child(milvus_server_uri, "crops_from_child", "write") == {"count": 2}
    with VectorStore(_settings(milvus_server_uri)) as store:
        assert store.count("crops_from_child") == 2
        hits = store.search("crops_from_child", np.eye(8, dtype=np.float32)[1:2], limit=5)[0]
        assert (hits[0].id, hits[0].item_key) == (101, "child-item")
        assert search_keys(store, CatalogFilter(brands=("child-brand",)), name="crops_from_child") == {
            "child-item"
        }
        assert store.item_fields("crops_from_child", ["child-item"])["child-item"].price == 9.5


def test_this_process_writes_and_a_child_process_searches(milvus_server_uri: str) -> None:
    with VectorStore(_settings(milvus_server_uri)) as store:
        assert store.ensure_collection("crops_from_parent", DIM)
        vectors = np.eye(DIM, dtype=np.float32)
        parent = ItemFields("top", "parent-brand", 5.0, True, {"origin": "parent"})
        other = ItemFields("top", "other-brand", 5.0, True, {"origin": "elsewhere"})
        store.upsert(
            "crops_from_parent",
            [
                CropRecord(3, vectors[3], "parent-item", "shirt", parent),
                CropRecord(4, vectors[3], "other-item", "shirt", other),
            ],
        )
    hits = _child(milvus_server_uri, "crops_from_parent", "search")
    assert isinstance(hits, list) and [hit[:2] for hit in hits] == [[3, "parent-item"]]
    assert hits[0][2] == pytest.approx(1.0, abs=1e-5)
