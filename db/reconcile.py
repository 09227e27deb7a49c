"""Repairing drift between the database (the truth) and Milvus (the copies).

For each index version that is not retired (and each retired base of a post-processed one):

1. vectors without a crop row (a crash between the writes of :mod:`db.indexing`, or rows
   deleted behind our back) are deleted, unless younger than ``orphan_grace_s`` — an
   ingestion may be between its Milvus write and its database commit right now;
2. (live version) items marked ``indexed`` whose crop rows lack vectors (vectors deleted behind our back),
   or that have no crop rows at all, go back to ``pending`` and are reported for re-queueing;
3. items whose filter fields in Milvus differ from the database are re-synced (no re-embedding).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import delete, select

from db.indexing import item_fields
from db.models import Crop, IndexState, IndexVersion, Item, ItemStatus
from db.session import Database
from db.vectors import VectorStore


@dataclass
class ReconcileReport:
    orphan_vectors_deleted: int = 0
    orphan_vectors_kept_young: int = 0
    requeued: list[str] = field(default_factory=list)
    resynced: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.orphan_vectors_deleted or self.requeued or self.resynced)


def reconcile(
    database: Database, store: VectorStore, *, grace_s: float, now: float | None = None
) -> ReconcileReport:
    """Run the three repairs of the module docstring; returns what was done."""
    now = time.time() if now is None else now
    report = ReconcileReport()
    with database.session() as session:
        versions = list(session.scalars(select(IndexVersion).where(IndexVersion.state != IndexState.RETIRED)))
        bases = {v.base_version_id for v in versions if v.base_version_id is not None}
        versions += session.scalars(
            select(IndexVersion).where(IndexVersion.id.in_(bases), IndexVersion.state == IndexState.RETIRED)
        ).all()  # a retired base still feeds its live post-processed version
        # a post-processed version's vectors are described by its base's crop rows
        version_refs = [(v.rows_version_id, v.collection_name, v.state) for v in versions]
    for version_id, collection, state in version_refs:
        report.versions.append(collection)
        if not store.has_collection(collection):
            store_ids: set[int] = set()
        else:
            store_ids = _delete_orphans(database, store, version_id, collection, grace_s, now, report)
        if state == IndexState.LIVE:  # a version still being built is allowed to lack items
            _requeue_missing(database, store_ids, version_id, report)
        if store.has_collection(collection):
            _resync_fields(database, store, version_id, collection, report)
    report.requeued = sorted(set(report.requeued))
    report.resynced = sorted(set(report.resynced))
    return report


def _delete_orphans(
    database: Database,
    store: VectorStore,
    version_id: int,
    collection: str,
    grace_s: float,
    now: float,
    report: ReconcileReport,
) -> set[int]:
    with database.session() as session:
        known = set(session.scalars(select(Crop.id).where(Crop.index_version_id == version_id)))
    present: set[int] = set()
    orphans: list[int] = []
    for rows in store.iter_rows(collection):
        for vector_id, _item_key, written_at in rows:
            present.add(vector_id)
            if vector_id in known:
                continue
            if now - written_at < grace_s:
                report.orphan_vectors_kept_young += 1
            else:
                orphans.append(vector_id)
    if orphans:
        report.orphan_vectors_deleted += store.delete_ids(collection, orphans)
    return present - set(orphans)


def _requeue_missing(
    database: Database, store_ids: set[int], version_id: int, report: ReconcileReport
) -> None:
    with database.session() as session:
        crops_by_item: dict[int, list[int]] = defaultdict(list)
        for crop_id, item_id in session.execute(
            select(Crop.id, Crop.item_id).where(Crop.index_version_id == version_id)
        ):
            crops_by_item[item_id].append(crop_id)
        for item in session.scalars(select(Item).where(Item.status == ItemStatus.INDEXED)):
            crop_ids = crops_by_item.get(item.id, [])
            if crop_ids and all(cid in store_ids for cid in crop_ids):
                continue
            session.execute(delete(Crop).where(Crop.item_id == item.id, Crop.index_version_id == version_id))
            item.status = ItemStatus.PENDING
            item.content_hash = None  # forces re-embedding on the next ingestion
            item.last_error = "re-queued by reconcile: vectors missing from the index"
            report.requeued.append(item.sku)


def _resync_fields(
    database: Database, store: VectorStore, version_id: int, collection: str, report: ReconcileReport
) -> None:
    with database.session() as session:
        items = session.scalars(
            select(Item).where(Item.id.in_(select(Crop.item_id).where(Crop.index_version_id == version_id)))
        ).all()
        expected = {item.sku: item_fields(item) for item in items}
    batch = list(expected)
    for start in range(0, len(batch), 500):
        chunk = batch[start : start + 500]
        stored = store.item_fields(collection, chunk)
        for sku in chunk:
            if sku in stored and stored[sku] != expected[sku]:
                store.update_item_fields(collection, sku, expected[sku])
                report.resynced.append(sku)
