"""DBA and PCA whitening as settings of an index version, on real Milvus Lite and SQLite.

The derived version must hold exactly ``PCA(DBA(raw))`` of its base's vectors, keep up with
ingestion and deletion, be searched with whitened queries, and be repaired by reconcile.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from clothes_search.cli import main
from clothes_search.settings import DatabaseSettings, MilvusSettings, VersionSettings
from db import migrate
from db.index_versions import activate, ensure_index_version, live_version
from db.indexing import ItemCrops, NewCrop, delete_item, index_items
from db.models import IndexState, IndexVersion, Item
from db.postprocessed_versions import (
    PostprocessSpec,
    build_postprocessed_version,
    version_transform,
)
from db.reconcile import reconcile
from db.session import Database
from db.vector_transforms import PCAWhitening, augment_one, database_side_augmentation
from db.vectors import VectorStore
from db.version_lifecycle import VersionRefusedError, activate_when_ready

DIM = 12
ITEMS = 30


def clustered(seed: int, count: int) -> np.ndarray:
    """Unit vectors in 5 tight clusters: DBA neighbours are well defined."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, DIM))
    vectors = centres[np.arange(count) % 5] + 0.3 * rng.normal(size=(count, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def indexed(tmp_path):
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path / 'c.db'}")
    migrate.upgrade(settings)
    database = Database(settings)
    store = VectorStore(MilvusSettings(uri=str(tmp_path / "milvus.db"), index_type="FLAT"))
    vectors = clustered(1, ITEMS * 2)
    with database.session() as session:
        version = ensure_index_version(session, store, signature="sigA", dimension=DIM)
        activate(session, store, version)
        session.add_all(Item(sku=f"sku-{i}", category="top", brand="acme") for i in range(ITEMS + 1))
        base_id = version.id
    batch = [
        ItemCrops(f"sku-{i}", f"hash-{i}", [new_crop(vectors[2 * i]), new_crop(vectors[2 * i + 1])])
        for i in range(ITEMS)
    ]
    index_items(database, store, base_id, batch)
    store.flush(store.collection_name("sigA"))
    yield database, store, base_id, tmp_path
    store.close()
    database.dispose()


def new_crop(vector: np.ndarray) -> NewCrop:
    return NewCrop(box=(0, 0, 10, 10), category="top", score=0.9, vector=vector)


def stored(store: VectorStore, collection: str) -> dict[int, np.ndarray]:
    return {r.id: r.vector for batch in store.iter_records(collection) for r in batch}


def test_the_derived_version_holds_pca_of_dba_of_the_raw_vectors(indexed):
    database, store, base_id, _ = indexed
    spec = PostprocessSpec(dba_top_n=3, dba_weights="linear", pca_dim=6, pca_eps=1e-4)
    report = build_postprocessed_version(database, store, base_id, spec)
    raw = stored(store, store.collection_name("sigA"))
    derived = stored(store, report.collection)
    assert set(derived) == set(raw) and report.vectors == 2 * ITEMS and report.dimension == 6
    ids = sorted(raw)
    matrix = np.stack([raw[i] for i in ids])
    whitening = PCAWhitening.fit(matrix, dim=6, eps=1e-4)  # the sample is every vector
    expected = whitening.transform(database_side_augmentation(matrix, 3, "linear"))
    np.testing.assert_allclose(np.stack([derived[i] for i in ids]), expected, atol=1e-4)
    with database.session() as session:
        version = session.get(IndexVersion, report.version_id)
        assert version.state == IndexState.BUILDING and version.rows_version_id == base_id
        kept = PCAWhitening.from_bytes(version.whitening)
        np.testing.assert_allclose(kept.projection, whitening.projection, rtol=1e-5, atol=1e-6)
        assert version.postprocess["dba_top_n"] == 3


def test_dba_only_keeps_the_dimension_and_no_whitening(indexed):
    database, store, base_id, _ = indexed
    report = build_postprocessed_version(database, store, base_id, PostprocessSpec(dba_top_n=2))
    raw = stored(store, store.collection_name("sigA"))
    ids = sorted(raw)
    expected = database_side_augmentation(np.stack([raw[i] for i in ids]), 2)
    derived = stored(store, report.collection)
    np.testing.assert_allclose(np.stack([derived[i] for i in ids]), expected, atol=1e-5)
    with database.session() as session:
        version = session.get(IndexVersion, report.version_id)
        assert version.whitening is None and version_transform(version).whitening is None


def test_ingestion_and_deletion_keep_the_derived_version_up_to_date(indexed):
    database, store, base_id, _ = indexed
    report = build_postprocessed_version(database, store, base_id, PostprocessSpec(dba_top_n=2, pca_dim=5))
    with database.session() as session:
        activate(session, store, session.get(IndexVersion, report.version_id))
    new_vector = clustered(1, 1)[0]  # close to cluster 0
    [new_id] = index_items(
        database, store, base_id, [ItemCrops(f"sku-{ITEMS}", "h", [new_crop(new_vector)])]
    )[f"sku-{ITEMS}"]
    raw = stored(store, store.collection_name("sigA"))
    others = {i: v for i, v in raw.items() if i != new_id}
    nearest = sorted(others, key=lambda i: -float(others[i] @ new_vector))[:2]
    with database.session() as session:
        transform = version_transform(session.get(IndexVersion, report.version_id))
    expected = transform.whitening.transform(
        augment_one(new_vector, np.stack([raw[i] for i in nearest]), "uniform")[None]
    )
    np.testing.assert_allclose(stored(store, report.collection)[new_id], expected[0], atol=1e-5)
    # the whitened query finds it first in the live (derived) version
    hits = store.search(store.settings.live_alias, transform.queries(new_vector[None]), limit=3)[0]
    assert hits[0].id == new_id
    with database.session() as session:
        assert delete_item(session, store, f"sku-{ITEMS}")
    assert new_id not in stored(store, report.collection)


def test_reconcile_repairs_the_derived_version_through_its_base_rows(indexed):
    database, store, base_id, _ = indexed
    report = build_postprocessed_version(database, store, base_id, PostprocessSpec(pca_dim=4))
    with database.session() as session:
        activate(session, store, session.get(IndexVersion, report.version_id))
    assert reconcile(database, store, grace_s=0).clean  # its vectors are its base's crop rows
    victim = next(iter(stored(store, report.collection)))
    store.delete_ids(report.collection, [victim])
    store.flush(report.collection)
    result = reconcile(database, store, grace_s=0)
    assert len(result.requeued) == 1  # that item goes back to the queue to be written again


def test_a_retired_derived_version_is_written_and_can_go_live_again_only_while_retained(indexed):
    database, store, base_id, _ = indexed
    report = build_postprocessed_version(database, store, base_id, PostprocessSpec(dba_top_n=1))
    with database.session() as session:
        derived = session.get(IndexVersion, report.version_id)
        activate(session, store, derived)
        activate(session, store, session.get(IndexVersion, base_id))  # back to the raw vectors
        assert derived.state == IndexState.RETIRED and live_version(session).id == base_id
    # retained: a new item still reaches it ...
    new = ItemCrops(f"sku-{ITEMS}", "hash-new", [new_crop(clustered(9, 1)[0])])
    [new_id] = index_items(database, store, base_id, [new], retention_s=3600)[new.sku]
    assert new_id in stored(store, report.collection)
    # ... and it can be made live again (a roll back)
    retained = VersionSettings(retention_s=3600, activation_timeout_s=1)
    assert activate_when_ready(
        database, store, report.collection, retained
    ).previous == store.collection_name("sigA")
    with database.session() as session:
        activate(session, store, session.get(IndexVersion, base_id))
    # past its retention it stopped receiving writes: refused, unless forced
    with pytest.raises(VersionRefusedError, match="retired more than"):
        activate_when_ready(database, store, report.collection, VersionSettings(retention_s=0))
    forced = activate_when_ready(
        database, store, report.collection, VersionSettings(retention_s=0), force=True
    )
    assert forced.collection == report.collection


def test_spec_rejects_nothing_to_do_and_bad_values():
    with pytest.raises(ValueError, match="nothing to apply"):
        PostprocessSpec()
    with pytest.raises(ValueError, match="dba_weights"):
        PostprocessSpec(dba_top_n=1, dba_weights="cubic")
    with pytest.raises(ValueError, match="pca_dim"):
        PostprocessSpec(pca_dim=0)


def test_cli_builds_activates_and_lists_a_whitened_version(indexed, monkeypatch):
    database, store, base_id, root = indexed
    store.close()  # embedded Milvus Lite: one process (here: one client) per data dir
    monkeypatch.setenv("CLOTHES_SEARCH_DATABASE__URL", f"sqlite:///{root / 'c.db'}")
    monkeypatch.setenv("CLOTHES_SEARCH_MILVUS__URI", str(root / "milvus.db"))
    monkeypatch.setenv("CLOTHES_SEARCH_MILVUS__INDEX_TYPE", "FLAT")
    runner = CliRunner()
    too_wide = runner.invoke(main, ["index", "postprocess", "--pca-dim", "100"])
    assert too_wide.exit_code == 1 and "needs more than 100 indexed vectors" in too_wide.output
    built = runner.invoke(main, ["index", "postprocess", "--dba-top-n", "2", "--pca-dim", "8", "--activate"])
    assert built.exit_code == 0, built.output
    listing = runner.invoke(main, ["index", "status"])
    assert "[DBA top-2 uniform + PCA whitening to 8-d]" in listing.output and "live" in listing.output
    with database.session() as session:
        live = live_version(session)
        assert live.base_version_id == base_id and live.dimension == 8
        assert (
            session.scalar(select(IndexVersion).where(IndexVersion.id == base_id)).state == IndexState.RETIRED
        )
    nothing = runner.invoke(main, ["index", "postprocess"])
    assert nothing.exit_code == 2 and "nothing to apply" in nothing.output
