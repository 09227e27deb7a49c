"""Submitting catalog rows: upsert metadata, decide what needs the models, open a job.

Per row:
- a new item, an item whose image source changed, one still ``pending``, or any item with
  ``refresh``: status ``pending``, queued for ingestion in the job (a ``failed`` item is
  queued again only when its image source changed, or with ``retry_failed``);
- an indexed item whose filter fields (category, brand, price, stock, attributes) changed:
  the database and Milvus' copies are updated — no re-embedding;
- otherwise nothing happens (re-running a feed is a no-op).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select

from db.indexing import sync_item_fields
from db.models import IngestJob, Item, ItemStatus
from db.session import Database
from db.vectors import VectorStore
from ingestion.feed import CatalogRow

_METADATA = ("title", "category", "brand", "price", "currency", "color", "sizes", "in_stock", "attributes")


@dataclass
class SubmitResult:
    job_id: int | None
    queued: list[str] = field(default_factory=list)
    metadata_updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _apply_metadata(item: Item, row: CatalogRow) -> None:
    for name in _METADATA:
        setattr(item, name, getattr(row, name))


def submit_rows(
    database: Database,
    store: VectorStore | None,
    rows: Sequence[CatalogRow],
    *,
    source: str,
    created_by: str = "",
    refresh: bool = False,
    retry_failed: bool = False,
) -> SubmitResult:
    """Upsert ``rows`` and open an ingestion job for the items that need the models.

    ``store`` receives the metadata-only updates of indexed items (None: skip, e.g. no index yet).
    """
    result = SubmitResult(job_id=None)
    to_sync: list[str] = []
    with database.session() as session:
        existing = {
            item.sku: item
            for item in session.scalars(select(Item).where(Item.sku.in_([r.sku for r in rows])))
        }
        queued_items: list[Item] = []
        for row in rows:
            item = existing.get(row.sku)
            if item is None:
                item = Item(sku=row.sku, image_url=row.image_source, status=ItemStatus.PENDING, attempts=0)
                _apply_metadata(item, row)
                session.add(item)
                queued_items.append(item)
                continue
            before = item.filter_fields()
            image_changed = item.image_url != row.image_source
            _apply_metadata(item, row)
            item.image_url = row.image_source
            again = item.status == ItemStatus.PENDING or (retry_failed and item.status == ItemStatus.FAILED)
            if refresh or image_changed or again:
                if item.status != ItemStatus.PROCESSING:
                    item.status = ItemStatus.PENDING
                item.attempts = 0
                queued_items.append(item)
            elif item.filter_fields() != before:
                to_sync.append(item.sku)
            else:
                result.unchanged.append(item.sku)
        if queued_items:
            job = IngestJob(source=source[:512], created_by=created_by[:128], total=len(queued_items))
            session.add(job)
            session.flush()
            for item in queued_items:
                item.last_job_id = job.id
            result.job_id = job.id
            result.queued = [item.sku for item in queued_items]
    if to_sync and store is not None:
        with database.session() as session:
            for sku in to_sync:
                sync_item_fields(session, store, sku)
    result.metadata_updated = to_sync
    return result


@dataclass(frozen=True)
class JobProgress:
    job_id: int
    total: int
    done: int
    failed: int
    embedded: int
    unchanged: int
    finished: bool
    failures: list[tuple[str, str]]

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done - self.failed)


def job_progress(database: Database, job_id: int, failures_limit: int = 1000) -> JobProgress | None:
    """A job's counters and its failed items with reasons; None if there is no such job."""
    with database.session() as session:
        job = session.get(IngestJob, job_id)
        if job is None:
            return None
        failures = session.execute(
            select(Item.sku, Item.last_error)
            .where(Item.last_job_id == job_id, Item.status == ItemStatus.FAILED)
            .order_by(Item.sku)
            .limit(failures_limit)
        ).all()
        return JobProgress(
            job_id=job.id,
            total=job.total,
            done=job.done,
            failed=job.failed,
            embedded=job.embedded,
            unchanged=job.unchanged,
            finished=job.finished_at is not None,
            failures=[(sku, error or "") for sku, error in failures],
        )
