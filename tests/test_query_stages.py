"""The search core's stages against real storage (SQLite + Milvus Lite): one read of the live version
serves the whole request, so an alias swap in the middle of a request cannot empty its answer."""

from __future__ import annotations

import numpy as np
import pytest

from clothes_search.settings import DatabaseSettings, MilvusSettings
from db import migrate
from db.index_versions import activate, ensure_index_version
from db.indexing import ItemCrops, NewCrop, index_items
from db.models import Crop, IndexVersion, Item
from db.session import Database
from db.vectors import VectorStore
from search.query_stages import (
    ReorderParams,
    find_candidates,
    live_index,
    load_matches,
    reorder_candidates,
)

DIM = 8


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def two_versions(tmp_path):
    """Ten items indexed in version A (live) and again, under other crop ids, in version B."""
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path / 'c.db'}")
    migrate.upgrade(settings)
    database = Database(settings)
    store = VectorStore(MilvusSettings(uri=str(tmp_path / "m.db"), index_type="FLAT"))
    with database.session() as session:
        a = ensure_index_version(session, store, signature="sigA", dimension=DIM)
        b = ensure_index_version(session, store, signature="sigB", dimension=DIM)
        activate(session, store, a)
        session.add_all(Item(sku=f"sku-{i}", category="top", brand="acme") for i in range(10))
        ids = (a.id, b.id)
    for version_id in ids:
        batch = [
            ItemCrops(f"sku-{i}", f"h{i}", [NewCrop((0, 0, 9, 9), "top", 1.0, unit(i))]) for i in range(10)
        ]
        index_items(database, store, version_id, batch)
    yield database, store, ids
    store.close()
    database.dispose()


def test_a_swap_between_reading_the_version_and_searching_does_not_empty_the_answer(two_versions):
    database, store, (_, b_id) = two_versions
    index = live_index(database, "sigA")  # the request reads the live version once ...
    with database.session() as session:
        activate(session, store, session.get(IndexVersion, b_id))  # ... then B goes live (alias swap)
    assert store.resolve_alias(store.settings.live_alias) == index.collection.replace("sigA", "sigB")
    [found] = find_candidates(store, index, unit(3)[None, :], limit=5)
    [matches] = load_matches(database, index.rows_version_id, [(found.ids, found.scores)], k=5, collapse=True)
    assert [m.sku for m in matches][:1] == ["sku-3"] and len(matches) == 5  # A's hits with A's rows


def test_candidates_carry_their_vectors_from_the_same_call_and_reorder(two_versions):
    database, store, _ = two_versions
    index = live_index(database, "sigA")
    [found] = find_candidates(store, index, unit(4)[None, :], limit=10, with_vectors=True)
    assert found.vectors is not None and found.vectors.shape == (10, DIM)
    np.testing.assert_allclose(found.vectors[0], unit(4), atol=1e-6)
    ids, scores = reorder_candidates(unit(4), found, ReorderParams(rerank="k_reciprocal", k1=3, k2=2))
    assert sorted(ids) == sorted(found.ids) and ids[0] == found.ids[0]
    assert np.all(np.diff(scores) <= 1e-6)


def _statements(database: Database) -> list[str]:
    """Every SQL statement the database runs from now on (appended as it runs)."""
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(database.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_only_the_crops_that_can_be_results_are_read_and_an_orphan_costs_one_more_read(tmp_path):
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path / 'c.db'}")
    migrate.upgrade(settings)
    database = Database(settings)
    store = VectorStore(MilvusSettings(uri=str(tmp_path / "m.db"), index_type="FLAT"))
    with database.session() as session:
        version = ensure_index_version(session, store, signature="sig", dimension=DIM)
        activate(session, store, version)
        session.add_all(Item(sku=f"sku-{i}", category="top", brand="acme") for i in range(12))
        version_id = version.id
    near = unit(100)
    batch = [  # two crops per item, all near the query
        ItemCrops(f"sku-{i}", f"h{i}", [NewCrop((0, 0, 9, 9), "top", 1.0, near + 0.1 * unit(i + j * 50))
                                          for j in range(2)])
        for i in range(12)
    ]  # fmt: skip
    index_items(database, store, version_id, batch)
    index = live_index(database, "sig")
    [found] = find_candidates(store, index, near[None, :], limit=24)
    assert len(found.ids) == 24 and set(found.keys_by_id().values()) == {f"sku-{i}" for i in range(12)}
    ranking = [(found.ids, found.scores)]
    [everything] = load_matches(database, index.rows_version_id, ranking, k=5, collapse=True)
    statements = _statements(database)
    [leading] = load_matches(database, index.rows_version_id, ranking, 5, True, found.keys_by_id())
    assert [(m.sku, m.score) for m in leading] == [(m.sku, m.score) for m in everything]
    [select] = [s for s in statements if "FROM crops" in s]
    assert select.count("?") <= 6  # the 5 crops that are results (+ the version), not the 24 candidates
    # the best crop's row vanishes (an orphan vector): still 5 results, with one more read
    with database.session() as session:
        session.execute(Crop.__table__.delete().where(Crop.id == found.ids[0]))
    [reference] = load_matches(database, index.rows_version_id, ranking, 5, True)
    statements.clear()
    [without] = load_matches(database, index.rows_version_id, ranking, 5, True, found.keys_by_id())
    assert len([s for s in statements if "FROM crops" in s]) == 2
    assert [(m.sku, m.score) for m in without] == [(m.sku, m.score) for m in reference]
    assert len(without) == 5
    store.close()
    database.dispose()
