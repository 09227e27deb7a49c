"""Celery tasks: thin wrappers that call :mod:`workers.ingest` and route the halves of a batch."""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from celery import shared_task
from celery.app.task import Task

from db.indexing import ItemCrops, NewCrop
from db.session import DatabaseUnavailableError
from db.vectors import VectorStoreUnavailableError
from ingestion.images.thumbnails import Thumbnail
from workers.ingest import PreparedBatch, prepare_batch, requeue_stale, retry_delay, write_batch
from workers.reindex import reindex_batch
from workers.routing import (
    INDEX_TASK,
    INGEST_TASK,
    REINDEX_TASK,
    REQUEUE_TASK,
    SYNC_FIELDS_TASK,
    dispatch_batches,
)
from workers.submit import sync_pending_fields
from workers.worker_services import services

log = logging.getLogger(__name__)
TRANSIENT = (DatabaseUnavailableError, VectorStoreUnavailableError, ConnectionError, TimeoutError)


def encode_entries(entries: Sequence[ItemCrops]) -> list[dict[str, Any]]:
    """A JSON-safe form of items' crops (vectors as base64 float32)."""
    return [
        {
            "sku": entry.sku,
            "content_hash": entry.content_hash,
            "claimed_source": entry.claimed_source,
            "crops": [
                {
                    "box": list(c.box),
                    "category": c.category,
                    "score": c.score,
                    "detectors": list(c.detectors),
                    "vector": base64.b64encode(np.asarray(c.vector, dtype="<f4").tobytes()).decode(),
                }
                for c in entry.crops
            ],
        }
        for entry in entries
    ]


def decode_entries(data: Sequence[dict[str, Any]]) -> list[ItemCrops]:
    return [
        ItemCrops(
            entry["sku"],
            entry["content_hash"],
            [
                NewCrop(
                    box=tuple(c["box"]),
                    category=c["category"],
                    score=float(c["score"]),
                    detectors=tuple(c["detectors"]),
                    vector=np.frombuffer(base64.b64decode(c["vector"]), dtype="<f4").copy(),
                )
                for c in entry["crops"]
            ],
            claimed_source=entry.get("claimed_source"),
        )
        for entry in data
    ]


def encode_batch(batch: PreparedBatch) -> dict[str, Any]:
    """A JSON-safe form of a prepared batch (its crops per index version)."""
    return {
        "token": batch.token,
        "job_id": batch.job_id,
        "unchanged": batch.unchanged,
        "failed": batch.failed,
        "retry": batch.retry,
        "attempts": batch.attempts,
        "to_index": {str(version): encode_entries(entries) for version, entries in batch.to_index.items()},
        "thumbnails": {
            sku: {
                "jpeg": base64.b64encode(t.jpeg).decode(),
                "size": [t.width, t.height],
                "original_size": list(t.original_size),
                "content_hash": t.content_hash,
            }
            for sku, t in batch.thumbnails.items()
        },
    }


def decode_batch(data: dict[str, Any]) -> PreparedBatch:
    return PreparedBatch(
        token=data["token"],
        job_id=data["job_id"],
        unchanged=list(data["unchanged"]),
        failed=dict(data["failed"]),
        retry=dict(data["retry"]),
        attempts={k: int(v) for k, v in data["attempts"].items()},
        to_index={int(version): decode_entries(entries) for version, entries in data["to_index"].items()},
        thumbnails={
            sku: Thumbnail(
                base64.b64decode(t["jpeg"]), *t["size"], tuple(t["original_size"]), t["content_hash"]
            )
            for sku, t in data.get("thumbnails", {}).items()
        },
    )


def _retry(task: Task, exc: Exception) -> None:
    delay = retry_delay(task.request.retries + 1, services().settings.queue)
    log.warning("%s: transient failure, retrying in %.1fs: %s", task.name, delay, exc)
    raise task.retry(exc=exc, countdown=delay, max_retries=services().settings.queue.max_attempts * 4)


@shared_task(bind=True, name=INGEST_TASK, acks_late=True, reject_on_worker_lost=True)
def ingest_batch(self: Task, skus: list[str], job_id: int | None = None) -> dict[str, int]:
    """Model half: claim, fetch, detect and embed; hands the vectors to the ``index`` queue."""
    try:
        batch = prepare_batch(services(), skus, token=self.request.id, job_id=job_id)
    except TRANSIENT as exc:
        _retry(self, exc)
    self.app.send_task(INDEX_TASK, args=[encode_batch(batch)], ignore_result=True)
    embedded = len({entry.sku for entries in batch.to_index.values() for entry in entries})
    return {"embedded": embedded, "unchanged": len(batch.unchanged), "failed": len(batch.failed)}


@shared_task(bind=True, name=INDEX_TASK, acks_late=True, reject_on_worker_lost=True)
def index_batch(self: Task, data: dict[str, Any]) -> dict[str, int]:
    """Write half: vectors to Milvus, rows to the database; schedules retries of transient failures."""
    batch = decode_batch(data)
    try:
        outcome = write_batch(services(), batch)
    except TRANSIENT as exc:
        _retry(self, exc)
    for sku, delay in outcome.retry_after.items():
        self.app.send_task(INGEST_TASK, args=[[sku], batch.job_id], countdown=delay, ignore_result=True)
    dispatch_batches(self.app, list(outcome.requeue.items()), services().settings.queue.ingest_batch_size)
    return {"indexed": len(outcome.indexed), "failed": len(outcome.failed), "retry": len(outcome.retry_after)}


@shared_task(bind=True, name=REQUEUE_TASK, acks_late=True)
def requeue_stale_items(self: Task) -> list[str]:
    """Re-queue items whose worker died while holding them (stale claims); scheduled by beat."""
    settings = services().settings
    stale = requeue_stale(services().database, settings.queue.stale_claim_s)
    dispatch_batches(self.app, stale, settings.queue.ingest_batch_size)
    return [sku for sku, _ in stale]


@shared_task(bind=True, name=SYNC_FIELDS_TASK, acks_late=True)
def sync_pending_fields_task(self: Task) -> int:
    """Copy to the vector store the metadata changes it missed (it was down when they were submitted)."""
    try:
        return len(sync_pending_fields(services().database, services().store))
    except TRANSIENT as exc:
        log.warning("vector store still unavailable for the pending metadata: %s", exc)
        return 0


@shared_task(bind=True, name=REINDEX_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def reindex_batch_task(self: Task, version_id: int, skus: list[str]) -> dict[str, Any]:
    """``index build``: embed these items with the version's models into it (its outcome per sku)."""
    try:
        return reindex_batch(services(), version_id, skus).to_dict()
    except TRANSIENT as exc:
        _retry(self, exc)
        raise  # not reached: retry raises
