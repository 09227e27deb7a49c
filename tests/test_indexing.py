"""Write order between the database and Milvus, and reconcile, on SQLite and PostgreSQL + Milvus Lite."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy import select

from clothes_search.settings import DatabaseSettings, MilvusSettings
from db import migrate
from db.filters import CatalogFilter
from db.index_versions import activate, ensure_index_version, live_version
from db.indexing import ItemCrops, NewCrop, crop_id, delete_item, index_items, sync_item_fields
from db.models import Crop, IndexState, Item, ItemStatus
from db.reconcile import reconcile
from db.session import Database
from db.vectors import CropRecord, ItemFields, VectorStore

DIM = 8


@pytest.fixture
def catalog(database_url, tmp_path):
    migrate.upgrade(DatabaseSettings(url=database_url))
    database = Database(DatabaseSettings(url=database_url))
    store = VectorStore(MilvusSettings(uri=str(tmp_path / "milvus.db"), index_type="FLAT"))
    with database.session() as session:
        version = ensure_index_version(session, store, signature="sigA", dimension=DIM, description="test")
        activate(session, store, version)
        version_id = version.id
        session.add_all(
            [
                Item(sku="shirt", category="top", brand="Acme", price=Decimal("20.00"), in_stock=True),
                Item(sku="jeans", category="bottom", brand="Denimco", price=Decimal("60.00"), in_stock=False),
            ]
        )
    yield database, store, version_id
    store.close()
    database.dispose()


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def crops(*seeds: int) -> list[NewCrop]:
    return [
        NewCrop(box=(0, 0, 10, 10), category="top", score=0.9, vector=unit(s), detectors=("a", "b"))
        for s in seeds
    ]


def collection(store: VectorStore) -> str:
    return store.collection_name("sigA")


def vector_ids(store: VectorStore, item_key: str | None = None) -> set[int]:
    rows = [row for batch in store.iter_rows(collection(store)) for row in batch]
    return {vid for vid, key, _ in rows if item_key is None or key == item_key}


def crop_rows(database: Database, sku: str) -> set[int]:
    with database.session() as session:
        return set(session.scalars(select(Crop.id).join(Crop.item).where(Item.sku == sku)))


def test_indexing_writes_rows_and_vectors_with_deterministic_ids(catalog):
    database, store, version_id = catalog
    ids = index_items(database, store, version_id, [ItemCrops("shirt", "hash1", crops(1, 2))])
    assert ids["shirt"] == [crop_id("shirt", "hash1", "sigA", 0), crop_id("shirt", "hash1", "sigA", 1)]
    assert crop_rows(database, "shirt") == vector_ids(store, "shirt") == set(ids["shirt"])
    with database.session() as session:
        item = session.scalar(select(Item).where(Item.sku == "shirt"))
        assert item.status == ItemStatus.INDEXED and item.content_hash == "hash1"
    hits = store.search(store.settings.live_alias, unit(1)[None], limit=1)[0]
    assert hits[0].id == ids["shirt"][0] and hits[0].item_key == "shirt"

    # the same image again: same ids, nothing duplicated
    index_items(database, store, version_id, [ItemCrops("shirt", "hash1", crops(1, 2))])
    assert store.count(collection(store)) == 2 and crop_rows(database, "shirt") == set(ids["shirt"])


def test_a_changed_image_replaces_the_items_crops_and_leaves_others_alone(catalog):
    database, store, version_id = catalog
    first = index_items(
        database,
        store,
        version_id,
        [ItemCrops("shirt", "h1", crops(1, 2)), ItemCrops("jeans", "j1", crops(3))],
    )
    second = index_items(database, store, version_id, [ItemCrops("shirt", "h2", crops(4))])
    assert crop_rows(database, "shirt") == vector_ids(store, "shirt") == set(second["shirt"])
    assert not set(first["shirt"]) & vector_ids(store)
    assert vector_ids(store, "jeans") == set(first["jeans"]) == crop_rows(database, "jeans")


def test_filters_use_the_items_metadata(catalog):
    database, store, version_id = catalog
    index_items(
        database, store, version_id, [ItemCrops("shirt", "h1", crops(1)), ItemCrops("jeans", "j1", crops(2))]
    )
    search = store.settings.live_alias
    in_stock = store.search(search, unit(2)[None], limit=10, filter=CatalogFilter(in_stock=True))[0]
    assert {h.item_key for h in in_stock} == {"shirt"}
    cheap = store.search(search, unit(2)[None], limit=10, filter=CatalogFilter(price_max=30.0))[0]
    assert {h.item_key for h in cheap} == {"shirt"}


def test_unknown_items_are_refused_before_anything_is_written(catalog):
    database, store, version_id = catalog
    with pytest.raises(ValueError, match="unknown items"):
        index_items(database, store, version_id, [ItemCrops("ghost", "h", crops(1))])
    assert store.count(collection(store)) == 0


def test_reconcile_deletes_vectors_written_without_rows(catalog):
    """A crash between the Milvus write and the database commit leaves vectors without rows."""
    database, store, version_id = catalog
    index_items(database, store, version_id, [ItemCrops("shirt", "h1", crops(1))])
    fields = ItemFields(category="top", brand="Acme", price=20.0, in_stock=True)
    orphan = CropRecord(id=12345, vector=unit(9), item_key="shirt", crop_category="top", fields=fields)
    store.upsert(collection(store), [orphan])

    young = reconcile(database, store, grace_s=3600)  # an ingestion may still be committing
    assert young.orphan_vectors_deleted == 0 and young.orphan_vectors_kept_young == 1
    report = reconcile(database, store, grace_s=0)
    assert report.orphan_vectors_deleted == 1
    assert 12345 not in vector_ids(store)
    assert vector_ids(store, "shirt") == crop_rows(database, "shirt")
    assert reconcile(database, store, grace_s=0).clean


def test_reconcile_requeues_items_whose_vectors_vanished(catalog):
    database, store, version_id = catalog
    index_items(
        database, store, version_id, [ItemCrops("shirt", "h1", crops(1)), ItemCrops("jeans", "j1", crops(2))]
    )
    store.delete_items(collection(store), ["jeans"])  # behind the database's back

    report = reconcile(database, store, grace_s=0)
    assert report.requeued == ["jeans"]
    with database.session() as session:
        jeans = session.scalar(select(Item).where(Item.sku == "jeans"))
        assert jeans.status == ItemStatus.PENDING and jeans.content_hash is None
    assert crop_rows(database, "jeans") == set()
    assert crop_rows(database, "shirt") == vector_ids(store, "shirt")  # untouched


def test_reconcile_and_sync_copy_changed_metadata_without_re_embedding(catalog):
    database, store, version_id = catalog
    ids = index_items(database, store, version_id, [ItemCrops("shirt", "h1", crops(1))])["shirt"]
    before = store.get_vectors(collection(store), ids)
    with database.session() as session:
        session.scalar(select(Item).where(Item.sku == "shirt")).price = Decimal("5.00")

    report = reconcile(database, store, grace_s=0)
    assert report.resynced == ["shirt"]
    assert store.item_fields(collection(store), ["shirt"])["shirt"].price == pytest.approx(5.0)
    after = store.get_vectors(collection(store), ids)
    assert all(np.array_equal(before[i], after[i]) for i in ids)

    with database.session() as session:
        session.scalar(select(Item).where(Item.sku == "shirt")).in_stock = False
        assert sync_item_fields(session, store, "shirt") == 1
    assert store.item_fields(collection(store), ["shirt"])["shirt"].in_stock is False


def test_delete_item_removes_rows_and_vectors(catalog):
    database, store, version_id = catalog
    index_items(database, store, version_id, [ItemCrops("shirt", "h1", crops(1, 2))])
    with database.session() as session:
        assert delete_item(session, store, "shirt") is True
        assert delete_item(session, store, "nope") is False
    assert vector_ids(store, "shirt") == set() and crop_rows(database, "shirt") == set()


def test_activating_a_new_version_swaps_the_alias_and_retires_the_old(catalog):
    database, store, version_id = catalog
    index_items(database, store, version_id, [ItemCrops("shirt", "h1", crops(1))])
    with database.session() as session:
        new = ensure_index_version(session, store, signature="sigB", dimension=DIM)
        assert new.state == IndexState.BUILDING
        new_id = new.id
    index_items(database, store, new_id, [ItemCrops("jeans", "j1", crops(1))])
    alias = store.settings.live_alias
    assert store.search(alias, unit(1)[None], limit=5)[0][0].item_key == "shirt"
    with database.session() as session:
        activate(session, store, session.get(type(new), new_id))
    assert store.search(alias, unit(1)[None], limit=5)[0][0].item_key == "jeans"
    with database.session() as session:
        assert live_version(session).id == new_id
        assert session.get(type(new), version_id).state == IndexState.RETIRED


def test_index_cli_status_and_reconcile(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from clothes_search.cli import main

    monkeypatch.setenv("CLOTHES_SEARCH_DATABASE__URL", f"sqlite:///{tmp_path / 'c.db'}")
    monkeypatch.setenv("CLOTHES_SEARCH_MILVUS__URI", str(tmp_path / "m.db"))
    monkeypatch.setenv("CLOTHES_SEARCH_MILVUS__INDEX_TYPE", "FLAT")
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    assert "no index versions yet" in runner.invoke(main, ["index", "status"]).output

    database = Database(DatabaseSettings(url=f"sqlite:///{tmp_path / 'c.db'}"))
    with VectorStore(MilvusSettings(uri=str(tmp_path / "m.db"), index_type="FLAT")) as store:
        with database.session() as session:
            version = ensure_index_version(session, store, signature="sigA", dimension=DIM, description="d")
            activate(session, store, version)
            session.add(Item(sku="shirt", category="top"))
        index_items(database, store, version.id, [ItemCrops("shirt", "h", crops(1, 2))])
        store.delete_items(collection(store), ["shirt"])
    database.dispose()

    status = runner.invoke(main, ["index", "status"])
    assert "crops_sigA" in status.output and "crop rows=2" in status.output and "vectors=0" in status.output
    result = runner.invoke(main, ["index", "reconcile", "--grace", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["requeued"] == ["shirt"]
