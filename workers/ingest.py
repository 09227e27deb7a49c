"""Catalog ingestion as plain functions: claim → fetch → detect/embed → write → record.

The Celery tasks and the in-process path both call these. A batch is split in two halves so
that the model work (:func:`prepare_batch`, queue ``ingest``) and the Milvus/database writes
(:func:`write_batch`, queue ``index``) can run in different workers.

Every item goes to each *write target* (:func:`db.index_versions.write_targets`): the live index
version, the versions being built beside it and the retired ones still retained, each embedded
with that version's own models (:meth:`Services.pipeline_for`; detections are shared between
versions whose detectors are the same). A target that already holds the item from the same image
bytes is skipped.

Per item, the outcome is one of: ``indexed`` (embedded and written), ``unchanged`` (same image
bytes as last time, held by every target: no model work), ``failed`` (a permanent error: 404, not
an image, too large...; or transient errors past ``queue.max_attempts``), or ``retry`` (a transient
error: 5xx, timeout, connection; released to ``pending`` and scheduled again with backoff).
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import ScalarSelect

from clothes_search.errors import ClothesSearchError
from clothes_search.services import Services
from clothes_search.settings import FetchSettings, QueueSettings, Settings
from db.index_versions import write_targets
from db.indexing import ItemCrops, NewCrop, index_items
from db.models import IngestJob, Item, ItemStatus, VersionItem, utcnow
from db.session import Database
from db.thumbnails import save_thumbnail, with_thumbnails
from db.vectors import VectorStoreError, VectorStoreUnavailableError
from ingestion.detection import FusedDetection
from ingestion.errors import ImageFetchError
from ingestion.images import LoadedImage, SourceBytes, decode_image, read_source
from ingestion.images.thumbnails import Thumbnail, make_thumbnail
from ingestion.model_sets import ModelSet
from ingestion.pipeline import ImageAnalysis, Pipeline


@dataclass(frozen=True)
class ClaimedItem:
    sku: str
    source: str
    content_hash: str | None
    attempts: int
    held_by: frozenset[int]  # the versions holding it from the image bytes of ``content_hash``
    trusted: bool = False  # from a trusted feed: may be a local file (inside ``root``)
    root: str | None = None
    has_thumbnail: bool = True


@dataclass
class PreparedBatch:
    """The result of the model half of a batch, ready to be written."""

    token: str
    job_id: int | None
    to_index: dict[int, list[ItemCrops]] = field(default_factory=dict)  # version id -> its crops
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retry: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    thumbnails: dict[str, Thumbnail] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    indexed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retry_after: dict[str, float] = field(default_factory=dict)  # sku -> seconds
    requeue: dict[str, int | None] = field(default_factory=dict)  # sku -> job: queue again now


def crops_of(analysis: ImageAnalysis, scale: float = 1.0) -> list[NewCrop]:
    """An image's fused garments and their vectors, as crops to store; ``scale`` maps boxes found on a
    reduced decode back to the original's pixels."""
    return [
        NewCrop(
            box=tuple(round(v * scale, 3) for v in g.box.as_list(3)),
            category=g.category,
            score=g.score,
            vector=v,
            detectors=g.detectors,
        )
        for g, v in zip(analysis.garments, analysis.vectors, strict=True)
    ]


def group_by_job(items: Sequence[tuple[str, int | None]]) -> dict[int | None, list[str]]:
    """``(sku, job id)`` pairs grouped per job, skus in their given order."""
    by_job: dict[int | None, list[str]] = defaultdict(list)
    for sku, job_id in items:
        by_job[job_id].append(sku)
    return dict(by_job)


def retry_delay(attempt: int, settings: QueueSettings) -> float:
    """Exponential backoff with full jitter: uniform in [0.5, 1] x base x 2^(attempt-1), capped."""
    base = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** max(0, attempt - 1))
    return base * random.uniform(0.5, 1.0)


def claim_items(
    database: Database, skus: Sequence[str], token: str, stale_after_s: float, version_ids: Sequence[int]
) -> list[ClaimedItem]:
    """Mark the items ``processing`` for ``token`` and return them.

    An item already processing is taken only when the claim is ours (a redelivered task) or
    stale (its worker died). PostgreSQL skips rows another transaction holds.
    """
    stale_before = utcnow() - timedelta(seconds=stale_after_s)
    with database.session() as session:
        query = (
            select(Item)
            .where(
                Item.sku.in_(list(skus)),
                or_(
                    Item.status != ItemStatus.PROCESSING,
                    Item.claim_token == token,
                    Item.claimed_at.is_(None),
                    Item.claimed_at < stale_before,
                ),
            )
            .with_for_update(skip_locked=True)
        )
        items = session.scalars(query).all()
        held: dict[int, set[int]] = defaultdict(set)  # item id -> versions holding it from its bytes
        thumbnails = with_thumbnails(session, [i.id for i in items])
        for item_id, version_id in session.execute(
            select(VersionItem.item_id, VersionItem.version_id)
            .join(Item, Item.id == VersionItem.item_id)
            .where(
                VersionItem.version_id.in_(list(version_ids)),
                VersionItem.item_id.in_([i.id for i in items]),
                VersionItem.content_hash == Item.content_hash,
            )
        ):
            held[item_id].add(version_id)
        now = utcnow()
        claimed = []
        for item in items:
            item.status = ItemStatus.PROCESSING
            item.claim_token = token
            item.claimed_at = now
            item.claim_source = item.image_url
            item.attempts = (item.attempts or 0) + 1  # every delivery counts, a worker dying too
            claimed.append(
                ClaimedItem(
                    item.sku,
                    item.image_url or "",
                    item.content_hash,
                    item.attempts,
                    frozenset(held[item.id]),
                    bool(item.image_trusted),
                    item.image_root,
                    item.id in thumbnails,
                )
            )
    return claimed


def fetch_policy(item: ClaimedItem, settings: Settings) -> tuple[FetchSettings, list[Path]]:
    """How an item's image may be read: a trusted feed's (local files inside its folder allowed) or the
    API's (http(s) only, ports and networks of ``row_fetch``)."""
    if item.trusted:
        return settings.fetch, [Path(item.root)] if item.root else []
    return settings.row_fetch, []


def fetch_all(items: Sequence[ClaimedItem], services: Services) -> dict[str, SourceBytes | Exception]:
    """Every item's encoded image bytes, fetched concurrently (decoding happens one at a time)."""
    settings = services.settings

    def fetch(item: ClaimedItem) -> SourceBytes | Exception:
        if not item.source:
            return ClothesSearchError("item has no image_url or image_path")
        policy, roots = fetch_policy(item, settings)
        try:
            return read_source(item.source, policy, local_roots=roots)
        except ClothesSearchError as exc:
            return exc

    if not items:
        return {}
    with ThreadPoolExecutor(max_workers=min(settings.queue.fetch_threads, len(items))) as pool:
        return dict(zip((i.sku for i in items), pool.map(fetch, items), strict=True))


def describe_error(exc: Exception) -> str:
    kind = getattr(exc, "kind", type(exc).__name__)
    return f"{kind}: {exc}"


@dataclass(frozen=True)
class WriteTarget:
    """An index version ingestion writes to, with the pipeline of its models."""

    version_id: int
    pipeline: Pipeline


def write_targets_of(services: Services) -> list[WriteTarget]:
    """This moment's write targets with their models loaded; models of versions no longer written to
    are let go (a worker follows a switch, a build and a clean-up without a restart)."""
    services.target_version_id()  # a first ingestion makes the configured models' version live
    with services.database.session() as session:
        versions = [
            (v.id, v.signature, v.models)
            for v in write_targets(session, services.settings.versions.retention_s)
        ]
    services.need_pipelines("ingest", (signature for _, signature, _ in versions))
    return [WriteTarget(v, services.pipeline_for(signature, models)) for v, signature, models in versions]


def prepare_batch(services: Services, skus: Sequence[str], token: str, job_id: int | None) -> PreparedBatch:
    """Claim, fetch (concurrently), decode (one at a time) and run each write target's models on the
    items whose image it does not hold yet. An item delivered more than ``queue.max_attempts`` times
    (its worker kept dying on it) fails instead of being tried again."""
    settings = services.settings
    targets = write_targets_of(services)
    claimed = claim_items(
        services.database, skus, token, settings.queue.stale_claim_s, [t.version_id for t in targets]
    )
    batch = PreparedBatch(token=token, job_id=job_id)
    batch.attempts = {item.sku: item.attempts for item in claimed}
    worn_out = [item for item in claimed if item.attempts > settings.queue.max_attempts]
    for item in worn_out:
        batch.failed[item.sku] = (
            f"gave_up: {item.attempts - 1} deliveries did not finish (a worker stopped while processing it)"
        )
    claimed = [item for item in claimed if item not in worn_out]
    fetched = fetch_all(claimed, services)
    to_embed: list[tuple[ClaimedItem, LoadedImage, list[WriteTarget]]] = []
    for item in claimed:
        result = fetched.pop(item.sku)  # the encoded bytes go as soon as this item is decoded
        if isinstance(result, ImageFetchError) and result.transient:
            batch.retry[item.sku] = describe_error(result)
            continue
        if isinstance(result, Exception):
            batch.failed[item.sku] = describe_error(result)
            continue
        same_bytes = hashlib.sha256(result.data).hexdigest() == item.content_hash
        missing = [t for t in targets if not (same_bytes and t.version_id in item.held_by)]
        if not missing and item.has_thumbnail:
            batch.unchanged.append(item.sku)  # same bytes, held everywhere: not even decoded
            continue
        policy, _ = fetch_policy(item, settings)
        try:
            loaded = decode_image(result.data, policy, source=result.label)
        except ClothesSearchError as exc:
            batch.failed[item.sku] = describe_error(exc)
            continue
        batch.thumbnails[item.sku] = make_thumbnail(loaded, settings.pipeline.thumbnail_size)
        if missing:
            to_embed.append((item, loaded, missing))
        else:
            batch.unchanged.append(item.sku)  # decoded only for its thumbnail (kept since this release)
    _analyse_for_targets(to_embed, targets, batch)
    return batch


def _analyse_for_targets(
    to_embed: Sequence[tuple[ClaimedItem, LoadedImage, list[WriteTarget]]],
    targets: Sequence[WriteTarget],
    batch: PreparedBatch,
) -> None:
    """Each target's crops of the images it lacks; targets with the same detectors share detections."""
    detections: dict[tuple[str, str], list[FusedDetection]] = {}  # (detection key, sku) -> garments
    for target in targets:
        entries = [(item, loaded) for item, loaded, missing in to_embed if target in missing]
        if not entries:
            continue
        key = ModelSet.of(target.pipeline.settings).detection_key()
        undetected = [(item, loaded) for item, loaded in entries if (key, item.sku) not in detections]
        if undetected:
            found = target.pipeline.detect([loaded.image for _, loaded in undetected])
            for (item, _), garments in zip(undetected, found, strict=True):
                detections[(key, item.sku)] = garments
        analyses = target.pipeline.analyse(
            [loaded.image for _, loaded in entries],
            detections=[detections[(key, item.sku)] for item, _ in entries],
        )
        for (item, loaded_image), analysis in zip(entries, analyses, strict=True):
            if not analysis.garments:
                batch.failed[item.sku] = (
                    "no_garment: no garment detected (pipeline.fallback_to_whole_image is off)"
                )
                continue
            crops = crops_of(analysis, loaded_image.scale)
            batch.to_index.setdefault(target.version_id, []).append(
                ItemCrops(item.sku, loaded_image.content_sha256, crops, claimed_source=item.source)
            )
    for sku in batch.failed:  # an item that failed for one version is written to none
        for entries in batch.to_index.values():
            entries[:] = [e for e in entries if e.sku != sku]


def _still_ours(session: Session, skus: Sequence[str], token: str) -> set[str]:
    return set(session.scalars(select(Item.sku).where(Item.sku.in_(list(skus)), Item.claim_token == token)))


def write_batch(services: Services, batch: PreparedBatch) -> BatchOutcome:
    """Write vectors and rows (see :mod:`db.indexing` for the order) and record each item's outcome."""
    settings = services.settings
    outcome = BatchOutcome()
    with services.database.session() as session:
        ours = _still_ours(session, [*batch.attempts], batch.token)
    written: set[str] = set()
    refused: dict[str, str] = {}
    moved: set[str] = set()
    for version_id, entries in batch.to_index.items():
        to_index = [entry for entry in entries if entry.sku in ours]  # a stale re-claim took the others
        done, bad = index_with_fallback(services, version_id, to_index)
        written.update(done)
        refused.update(bad)
        moved.update(e.sku for e in to_index if e.sku not in done and e.sku not in bad)
    moved -= set(refused)
    outcome.indexed = [sku for sku in dict.fromkeys(written) if sku not in refused and sku not in moved]
    with services.database.session() as session:
        by_sku = {
            item.sku: item
            for item in session.scalars(
                select(Item).where(
                    Item.sku.in_([*batch.unchanged, *batch.failed, *batch.retry, *refused, *moved])
                )
            )
        }
        for sku, reason in refused.items():  # the vector store refused that item's row
            _release(by_sku[sku], ItemStatus.FAILED, reason)
            outcome.failed[sku] = reason
        for sku in moved:  # its image changed while it was processed: the new one is queued
            _release(by_sku[sku], ItemStatus.PENDING, "image replaced while processing: queued again")
            outcome.requeue[sku] = by_sku[sku].last_job_id
        for sku in batch.unchanged:
            if sku in ours:
                _release(by_sku[sku], ItemStatus.INDEXED, None)
                outcome.unchanged.append(sku)
        _save_thumbnails(session, batch.thumbnails, [*outcome.indexed, *outcome.unchanged])
        for sku, reason in batch.failed.items():
            if sku in ours:
                _release(by_sku[sku], ItemStatus.FAILED, reason)
                outcome.failed[sku] = reason
        for sku, reason in batch.retry.items():
            if sku not in ours:
                continue
            if batch.attempts.get(sku, 0) >= settings.queue.max_attempts:
                final = f"{reason} (gave up after {batch.attempts[sku]} attempts)"
                _release(by_sku[sku], ItemStatus.FAILED, final)
                outcome.failed[sku] = final
            else:
                _release(by_sku[sku], ItemStatus.PENDING, reason)
                outcome.retry_after[sku] = retry_delay(batch.attempts.get(sku, 1), settings.queue)
        if batch.job_id is not None:
            session.execute(
                update(IngestJob)
                .where(IngestJob.id == batch.job_id)
                .values(
                    embedded=IngestJob.embedded + len(outcome.indexed),
                    unchanged=IngestJob.unchanged + len(outcome.unchanged),
                )
            )
            refresh_job_counts(session, batch.job_id)
    return outcome


def _save_thumbnails(session: Session, thumbnails: Mapping[str, Thumbnail], skus: Sequence[str]) -> None:
    """Store the thumbnails of the items written (their image is the one the thumbnail shows)."""
    wanted = [sku for sku in skus if sku in thumbnails]
    if not wanted:
        return
    for item in session.scalars(select(Item).where(Item.sku.in_(wanted))):
        made = thumbnails[item.sku]
        size = (made.width, made.height)
        save_thumbnail(session, item, made.jpeg, size, made.original_size, made.content_hash)


def index_with_fallback(
    services: Services, version_id: int, entries: Sequence[ItemCrops], *, mark_indexed: bool = True
) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Write the batch; if the vector store refuses it (not unavailable: a row it cannot take), write
    item by item so that only the bad items fail. Returns the written items and the refused ones."""
    retention = services.settings.versions.retention_s

    def write(chosen: Sequence[ItemCrops]) -> dict[str, list[int]]:
        return index_items(
            services.database,
            services.store,
            version_id,
            chosen,
            mark_indexed=mark_indexed,
            retention_s=retention,
        )

    if not entries:
        return {}, {}
    try:
        return write(entries), {}
    except VectorStoreUnavailableError:
        raise  # transient: the whole batch is retried
    except VectorStoreError:
        pass  # find the items it refuses
    written: dict[str, list[int]] = {}
    refused: dict[str, str] = {}
    for entry in entries:
        try:
            written.update(write([entry]))
        except VectorStoreUnavailableError:
            raise
        except VectorStoreError as exc:
            refused[entry.sku] = describe_error(exc)
    return written, refused


def _release(item: Item, status: ItemStatus, error: str | None) -> None:
    item.status = status
    item.last_error = error
    item.claim_token = None
    item.claimed_at = None
    item.claim_source = None


def refresh_job_counts(session: Session, job_id: int) -> None:
    """Set a job's done / failed counts from its items' states (idempotent under redelivery)."""

    def count(status: ItemStatus) -> ScalarSelect[int]:
        in_job = select(func.count(Item.id)).where(Item.last_job_id == job_id, Item.status == status)
        return in_job.scalar_subquery()

    session.flush()
    session.execute(
        update(IngestJob)
        .where(IngestJob.id == job_id)
        .values(done=count(ItemStatus.INDEXED), failed=count(ItemStatus.FAILED))
    )
    session.execute(
        update(IngestJob)
        .where(
            IngestJob.id == job_id,
            IngestJob.finished_at.is_(None),
            IngestJob.done + IngestJob.failed >= IngestJob.total,
        )
        .values(finished_at=func.now())
    )


def requeue_stale(database: Database, stale_after_s: float) -> list[tuple[str, int | None]]:
    """Items stuck in ``processing`` longer than ``stale_after_s`` (their worker died): back to pending.

    Returns ``(sku, job id)`` pairs to queue again.
    """
    stale_before = utcnow() - timedelta(seconds=stale_after_s)
    with database.session() as session:
        items = session.scalars(
            select(Item).where(
                Item.status == ItemStatus.PROCESSING,
                or_(Item.claimed_at.is_(None), Item.claimed_at < stale_before),
            )
        ).all()
        for item in items:
            _release(item, ItemStatus.PENDING, "re-queued: the worker holding it stopped")
        return [(item.sku, item.last_job_id) for item in items]
