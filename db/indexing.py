"""Writing an item's crops to the database and Milvus in an order that a crash cannot corrupt.

Write order for :func:`index_items` (the database is the truth; search joins Milvus
hits with crop rows and drops hits that have none):

1. **Milvus upsert** of the new vectors (one call for a whole batch of items). Their ids
   are deterministic (item, image content, model signature, crop number), so a repeated or
   redelivered write replaces rows in place and never duplicates them. The version's
   post-processed versions (:mod:`db.postprocessed_versions`) get the same ids, transformed.
2. **One database transaction**: the item's old crop rows of this index version are
   replaced by the new ones, its :class:`~db.models.VersionItem` row records the image they come
   from, and the item is marked ``indexed`` with the image's hash (not by a re-index, which leaves
   the item's state to ingestion). This commit is the moment the replacement becomes visible.
3. **Milvus delete** of the items' other vectors (their previous crops), in every collection.

A crash after 1 leaves vectors without crop rows (invisible to search); a crash after 2
leaves the old vectors without rows (also invisible). Both are deleted by the next
ingestion of that item (step 3) or by ``clothes-search index reconcile``. An item never
shows a mix of old and new crops, and never disappears while it is being replaced.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import Crop, IndexVersion, Item, ItemStatus, VersionItem, utcnow
from db.postprocessed_versions import derived_versions, write_to_derived
from db.session import Database
from db.vectors import CropRecord, ItemFields, VectorStore


@dataclass(frozen=True)
class NewCrop:
    """A garment crop to store: box xyxy in the image's pixels, detected category, its vector."""

    box: tuple[float, float, float, float]
    category: str
    score: float
    vector: np.ndarray
    detectors: tuple[str, ...] = field(default_factory=tuple)


def crop_id(sku: str, content_hash: str, signature: str, index: int) -> int:
    """A deterministic positive 63-bit id for crop ``index`` of an item's image under a signature."""
    digest = hashlib.sha256(f"{sku}\x1f{content_hash}\x1f{signature}\x1f{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1) or 1


def item_fields(item: Item) -> ItemFields:
    return ItemFields(**item.filter_fields())


@dataclass(frozen=True)
class ItemCrops:
    """The crops computed for one item's image (``content_hash``: SHA-256 of the image bytes).

    ``claimed_source``: the image source the crops were computed from; when given, the item is written
    only if that is still its source at the commit (compare-and-set: an image replaced meanwhile is not
    overwritten with the old one's crops).
    """

    sku: str
    content_hash: str
    crops: Sequence[NewCrop]
    claimed_source: str | None = None


def index_items(
    database: Database,
    store: VectorStore,
    version_id: int,
    batch: Sequence[ItemCrops],
    *,
    mark_indexed: bool = True,
    retention_s: float = 0.0,
) -> dict[str, list[int]]:
    """Store each item's crops in index version ``version_id``, replacing its previous ones.

    Runs the three steps of the module docstring for the whole batch: one Milvus upsert, one
    database transaction, one Milvus delete. Returns the new crop ids per sku written; an entry whose
    ``claimed_source`` is no longer its item's image source is left out (nothing of it is written).
    Without ``mark_indexed`` (``index build``) the items' own state is left as it is. The version's
    post-processed versions get the vectors too, retired ones for ``retention_s``.
    """
    if not batch:
        return {}
    with database.session() as session:
        version = session.get(IndexVersion, version_id)
        if version is None:
            raise ValueError(f"no index version {version_id}")
        skus = [entry.sku for entry in batch]
        locked = (
            select(Item).where(Item.sku.in_(skus)).with_for_update().execution_options(populate_existing=True)
        )
        items = {item.sku: item for item in session.scalars(locked)}
        unknown = sorted(set(skus) - set(items))
        if unknown:
            raise ValueError(f"unknown items {unknown[:5]}: upsert their metadata first")
        # the rows are locked (PostgreSQL) from here to the commit, so a submission changing an image
        # cannot slip between this check and the write: the crops' source must still be the item's
        written = [e for e in batch if e.claimed_source is None or items[e.sku].image_url == e.claimed_source]
        written_at = int(time.time())
        new_ids: dict[str, list[int]] = {}
        records: list[CropRecord] = []
        for entry in written:
            item = items[entry.sku]
            ids = [
                crop_id(entry.sku, entry.content_hash, version.signature, i) for i in range(len(entry.crops))
            ]
            new_ids[entry.sku] = ids
            fields = item_fields(item)
            records.extend(
                CropRecord(
                    id=cid,
                    vector=np.asarray(c.vector, dtype=np.float32),
                    item_key=entry.sku,
                    crop_category=c.category,
                    fields=fields,
                    written_at=written_at,
                )
                for cid, c in zip(ids, entry.crops, strict=True)
            )
        collection = version.collection_name
        derived = derived_versions(session, version.id, retention_s)
        if records:
            store.upsert(collection, records)  # step 1, then the same crops in its post-processed versions
            write_to_derived(store, version, derived, records)
        collections = [collection, *(v.collection_name for v in derived)]
        item_ids = [items[entry.sku].id for entry in written]
        session.execute(delete(Crop).where(Crop.item_id.in_(item_ids), Crop.index_version_id == version.id))
        session.execute(
            delete(VersionItem).where(VersionItem.item_id.in_(item_ids), VersionItem.version_id == version.id)
        )
        now = utcnow()
        for entry in written:
            item = items[entry.sku]
            session.add(
                VersionItem(
                    version_id=version.id,
                    item_id=item.id,
                    content_hash=entry.content_hash,
                    source=entry.claimed_source if entry.claimed_source is not None else item.image_url,
                    indexed_at=now,
                )
            )
            session.add_all(
                Crop(
                    id=cid,
                    item_id=item.id,
                    index_version_id=version.id,
                    x1=float(c.box[0]),
                    y1=float(c.box[1]),
                    x2=float(c.box[2]),
                    y2=float(c.box[3]),
                    category=c.category,
                    score=float(c.score),
                    detectors=list(c.detectors),
                    signature=version.signature,
                )
                for cid, c in zip(new_ids[entry.sku], entry.crops, strict=True)
            )
            if not mark_indexed:
                continue
            item.status = ItemStatus.INDEXED
            item.content_hash = entry.content_hash
            item.indexed_at = now
            item.last_error = None
            item.claimed_at = None
            item.claim_token = None
            item.claim_source = None
    # step 2 committed: the new crops are what search sees
    keep = [cid for ids in new_ids.values() for cid in ids]
    for name in collections:
        store.delete_items_except(name, list(new_ids), keep)  # step 3
    return new_ids


def delete_item(session: Session, store: VectorStore, sku: str) -> bool:
    """Remove an item, its crop rows and its vectors in every index version. False if unknown.

    Order: database first (the item disappears from search at commit), then Milvus; a crash
    in between leaves orphan vectors for reconcile.
    """
    item = session.scalar(select(Item).where(Item.sku == sku))
    if item is None:
        return False
    collections = session.scalars(select(IndexVersion.collection_name)).all()
    session.delete(item)
    session.flush()
    for collection in collections:
        if store.has_collection(collection):
            store.delete_items(collection, [sku])
    return True


def sync_item_fields(session: Session, store: VectorStore, sku: str) -> int:
    """Copy an item's current filter fields (category, brand, price, stock, attributes) to Milvus.

    No re-embedding: the vectors stay as they are. Returns the number of vector rows updated.
    """
    item = session.scalar(select(Item).where(Item.sku == sku))
    if item is None:
        return 0
    fields = item_fields(item)
    updated = 0
    for collection in session.scalars(select(IndexVersion.collection_name)).all():
        if store.has_collection(collection):
            updated += store.update_item_fields(collection, sku, fields)
    return updated
