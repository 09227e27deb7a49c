"""Submitting catalog rows: upsert metadata, decide what needs the models, open a job.

Per row:
- a new item, an item whose image source changed, one still ``pending``, or any item with
  ``refresh``: status ``pending``, queued for ingestion in the job (a ``failed`` item is
  queued again only when its image source changed, or with ``retry_failed``);
- an indexed item whose filter fields (category, brand, price, stock, attributes) changed:
  the database and Milvus' copies are updated — no re-embedding. The change is marked pending
  (``fields_pending``) in the same transaction and cleared once Milvus has it, so a sync that fails
  (Milvus down) is completed by the next submission of the row or by the scheduled
  :func:`sync_pending_fields`;
- otherwise nothing happens (re-running a feed is a no-op).

Rows from a trusted feed (the CLI) may name local images: relative paths are taken from the feed's
folder, and the worker reads them only inside that folder or ``fetch.local_roots``. Rows sent to the
API are untrusted: their images are fetched under ``row_fetch`` (http(s) only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    trusted: bool = False,
    local_root: Path | None = None,
) -> SubmitResult:
    """Upsert ``rows`` and open an ingestion job for the items that need the models.

    ``store`` receives the metadata-only updates of indexed items (None: skip, e.g. no index yet).
    ``trusted``: the rows come from a trusted feed whose local images are in ``local_root``.
    """
    root = str(local_root.absolute()) if trusted and local_root is not None else None
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
            source = _source(row, local_root if trusted else None)
            if item is None:
                item = Item(sku=row.sku, image_url=source, status=ItemStatus.PENDING, attempts=0)
                _apply_metadata(item, row)
                item.image_trusted, item.image_root = trusted, root
                session.add(item)
                queued_items.append(item)
                continue
            before = item.filter_fields()
            image_changed = item.image_url != source or item.image_trusted != trusted
            _apply_metadata(item, row)
            item.image_url = source
            item.image_trusted, item.image_root = trusted, root
            again = item.status == ItemStatus.PENDING or (retry_failed and item.status == ItemStatus.FAILED)
            if refresh or image_changed or again:
                if item.status != ItemStatus.PROCESSING:
                    item.status = ItemStatus.PENDING
                item.attempts = 0
                queued_items.append(item)
            elif item.filter_fields() != before or item.fields_pending:
                item.fields_pending = True  # cleared once the vector store has the new fields
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
        synced_fields(database, store, to_sync)
    result.metadata_updated = to_sync
    return result


def retry_failed(database: Database, skus: Sequence[str], created_by: str) -> SubmitResult:
    """Queue these failed items again (their image may have been fixed at its source) as a new job."""
    result = SubmitResult(job_id=None)
    with database.session() as session:
        failed = list(
            session.scalars(select(Item).where(Item.sku.in_(list(skus)), Item.status == ItemStatus.FAILED))
        )
        if not failed:
            return result
        job = IngestJob(source="retry", created_by=created_by[:128], total=len(failed))
        session.add(job)
        session.flush()
        for item in failed:
            item.status, item.attempts, item.last_job_id = ItemStatus.PENDING, 0, job.id
        result.job_id, result.queued = job.id, [item.sku for item in failed]
    return result


def _source(row: CatalogRow, feed_folder: Path | None) -> str:
    """The row's image source; a trusted feed's relative local path is taken from the feed's folder."""
    if feed_folder is not None and row.image_path is not None and not Path(row.image_path).is_absolute():
        return str(feed_folder.absolute() / row.image_path)
    return row.image_source


def synced_fields(database: Database, store: VectorStore, skus: Sequence[str]) -> list[str]:
    """Copy these items' filter fields to the vector store and clear their pending mark; the skus synced.

    One item at a time, each in its own transaction: an item that fails stays pending for later.
    """
    synced = []
    for sku in skus:
        with database.session() as session:
            item = session.scalar(select(Item).where(Item.sku == sku).with_for_update())
            if item is None:
                continue
            sync_item_fields(session, store, sku)
            item.fields_pending = False
        synced.append(sku)
    return synced


def sync_pending_fields(database: Database, store: VectorStore, limit: int = 1000) -> list[str]:
    """Complete metadata changes the vector store missed (it was down): the scheduled sweep."""
    with database.session() as session:
        pending = list(session.scalars(select(Item.sku).where(Item.fields_pending.is_(True)).limit(limit)))
    return synced_fields(database, store, pending)


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
