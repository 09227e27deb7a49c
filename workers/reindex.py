"""Filling an index version from the catalog in the database: ``clothes-search index build``.

:func:`reindex_batch` embeds catalog items with a version's own models and writes them into it
(:func:`db.indexing.index_items`, without touching the items' state: ingestion owns it). An item the
version holds already from its current image is skipped, so a build that stopped half-way (killed,
Ctrl-C) resumes where it was: only the missing items are embedded. Writes are compare-and-set on the
item's image source: an item whose image changes meanwhile is left to ingestion, which writes the new
image to every version, this one included (it is a write target while it is being built).

:func:`run_build` sends the batches either to the Celery workers' ``admin`` queue (at most a few
batches in flight, so catalog ingestion keeps the workers) or runs them in this process at a lower
CPU priority; both can hold a rate limit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select

from clothes_search.errors import ClothesSearchError
from clothes_search.services import Services
from db.indexing import ItemCrops
from db.models import IndexVersion, Item, ItemStatus, VersionItem
from db.thumbnails import save_thumbnail
from ingestion.errors import ImageFetchError
from ingestion.images import LoadedImage, decode_image
from ingestion.images.thumbnails import make_thumbnail
from workers.ingest import ClaimedItem, crops_of, describe_error, fetch_all, fetch_policy, index_with_fallback

log = logging.getLogger(__name__)


@dataclass
class ReindexOutcome:
    """What one batch of a build did, per sku."""

    embedded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # held already, no longer indexed, or image replaced
    failed: dict[str, str] = field(default_factory=dict)
    retry: dict[str, str] = field(default_factory=dict)  # transient: send again later

    def to_dict(self) -> dict[str, Any]:
        return {
            "embedded": self.embedded,
            "skipped": self.skipped,
            "failed": self.failed,
            "retry": self.retry,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReindexOutcome:
        return cls(list(data["embedded"]), list(data["skipped"]), dict(data["failed"]), dict(data["retry"]))

    def add(self, other: ReindexOutcome) -> None:
        self.embedded += other.embedded
        self.skipped += other.skipped
        self.failed.update(other.failed)
        self.retry.update(other.retry)


def _items_to_embed(
    services: Services, version_id: int, skus: Sequence[str]
) -> tuple[list[ClaimedItem], list[str]]:
    """The items of ``skus`` the version lacks (indexed, not held from their current image), and the rest."""
    with services.database.session() as session:
        rows = session.execute(
            select(Item, VersionItem.source)
            .outerjoin(
                VersionItem, and_(VersionItem.item_id == Item.id, VersionItem.version_id == version_id)
            )
            .where(Item.sku.in_(list(skus)))
        ).all()
    todo, skipped = [], []
    for item, held_source in rows:
        if item.status != ItemStatus.INDEXED or not item.image_url or held_source == item.image_url:
            skipped.append(item.sku)
            continue
        todo.append(
            ClaimedItem(
                item.sku, item.image_url, None, 0, frozenset(), bool(item.image_trusted), item.image_root
            )
        )
    return todo, skipped


def reindex_batch(services: Services, version_id: int, skus: Sequence[str]) -> ReindexOutcome:
    """Embed the items of ``skus`` that the version lacks with its models and write them into it."""
    outcome = ReindexOutcome()
    with services.database.session() as session:
        version = session.get(IndexVersion, version_id)
        if version is None:
            raise ClothesSearchError(f"no index version {version_id} (dropped during the build?)")
        signature, models = version.signature, dict(version.models or {})
    pipeline = services.pipeline_for(signature, models)
    todo, outcome.skipped = _items_to_embed(services, version_id, skus)
    fetched = fetch_all(todo, services)
    loaded = []
    for item in todo:
        result = fetched.pop(item.sku)
        if isinstance(result, ImageFetchError) and result.transient:
            outcome.retry[item.sku] = describe_error(result)
        elif isinstance(result, Exception):
            outcome.failed[item.sku] = describe_error(result)
        else:
            try:
                image = decode_image(
                    result.data, fetch_policy(item, services.settings)[0], source=result.label
                )
            except ClothesSearchError as exc:
                outcome.failed[item.sku] = describe_error(exc)
                continue
            loaded.append((item, image, hashlib.sha256(result.data).hexdigest()))
    entries = []
    for (item, image, content_hash), analysis in zip(
        loaded, pipeline.analyse([image.image for _, image, _ in loaded]), strict=True
    ):
        if not analysis.garments:
            outcome.failed[item.sku] = (
                "no_garment: no garment detected (pipeline.fallback_to_whole_image is off)"
            )
            continue
        entries.append(
            ItemCrops(item.sku, content_hash, crops_of(analysis, image.scale), claimed_source=item.source)
        )
    written, refused = index_with_fallback(services, version_id, entries, mark_indexed=False)
    outcome.failed.update(refused)
    _backfill_thumbnails(services, [(item, image) for item, image, _ in loaded if not item.has_thumbnail])
    for entry in entries:
        if entry.sku in written:
            outcome.embedded.append(entry.sku)
        elif entry.sku not in refused:
            outcome.skipped.append(entry.sku)  # its image was replaced meanwhile: ingestion writes it
    return outcome


def _backfill_thumbnails(services: Services, decoded: Sequence[tuple[ClaimedItem, LoadedImage]]) -> None:
    """Thumbnails for items ingested before they were kept (a build decodes their images anyway)."""
    if not decoded:
        return
    size = services.settings.pipeline.thumbnail_size
    made = {item.sku: make_thumbnail(image, size) for item, image in decoded}
    with services.database.session() as session:
        for row in session.scalars(select(Item).where(Item.sku.in_(list(made)), Item.image_width.is_(None))):
            t = made[row.sku]
            save_thumbnail(session, row, t.jpeg, (t.width, t.height), t.original_size, t.content_hash)


def batches_of(skus: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(skus), size):
        yield list(skus[start : start + size])


@dataclass(frozen=True)
class BuildPace:
    """How hard a build may push: items per second (0: no limit), batches in flight on the workers, and
    the CPU priority of an in-process build (``nice``: the API's requests come first)."""

    max_rate: float = 0.0
    in_flight: int = 2
    nice: int = 10


def _paced(batches: Sequence[list[str]], max_rate: float) -> Iterator[list[str]]:
    started, sent = time.monotonic(), 0
    for batch in batches:
        if max_rate > 0:
            wait = started + sent / max_rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        sent += len(batch)
        yield batch


def run_build(
    services: Services,
    version_id: int,
    skus: Sequence[str],
    pace: BuildPace,
    on_batch: Callable[[ReindexOutcome], None],
    retries: int = 3,
) -> ReindexOutcome:
    """Embed ``skus`` into the version, batch by batch (Celery workers when a broker is set, else here);
    transient failures are sent again up to ``retries`` times. ``on_batch`` sees every batch's outcome."""
    total = ReindexOutcome()
    pending = list(skus)
    size = services.settings.versions.build_batch_size
    for attempt in range(retries + 1):
        batches = list(batches_of(pending, size))
        if services.settings.queue.broker_url:
            outcomes = _on_workers(services, version_id, batches, pace)
        else:
            outcomes = _in_process(services, version_id, batches, pace)
        retry: dict[str, str] = {}
        for outcome in outcomes:
            on_batch(outcome)
            retry.update(outcome.retry)
            outcome.retry = {}
            total.add(outcome)
        if not retry:
            break
        if attempt == retries:
            total.failed.update(
                {sku: f"{reason} (gave up after {retries + 1} tries)" for sku, reason in retry.items()}
            )
            break
        pending = list(retry)
        time.sleep(services.settings.queue.retry_backoff_s * 2**attempt)
    return total


def _in_process(
    services: Services, version_id: int, batches: Sequence[list[str]], pace: BuildPace
) -> Iterator[ReindexOutcome]:
    if pace.nice:
        try:
            os.nice(pace.nice)
        except OSError as exc:  # not permitted here: build at the normal priority
            log.warning("could not lower the build's CPU priority: %s", exc)
        pace = BuildPace(pace.max_rate, pace.in_flight, 0)  # once per process
    for batch in _paced(batches, pace.max_rate):
        yield reindex_batch(services, version_id, batch)


def _on_workers(
    services: Services, version_id: int, batches: Sequence[list[str]], pace: BuildPace
) -> Iterator[ReindexOutcome]:
    from workers.celery_app import create_celery
    from workers.routing import REINDEX_TASK

    app = create_celery(services.settings)
    in_flight: deque = deque()
    try:
        for batch in _paced(batches, pace.max_rate):
            while len(in_flight) >= max(1, pace.in_flight):
                yield ReindexOutcome.from_dict(in_flight.popleft().get(disable_sync_subtasks=False))
            in_flight.append(app.send_task(REINDEX_TASK, args=[version_id, batch], ignore_result=False))
        while in_flight:
            yield ReindexOutcome.from_dict(in_flight.popleft().get(disable_sync_subtasks=False))
    finally:
        app.close()
