"""Queue and task names, and how items become ingest tasks (shared by the senders and the workers).

Queues: ``ingest`` (fetch + detect + embed: CPU/GPU heavy, many workers), ``index`` (Milvus and
database writes: one consumer suffices and is required with a Milvus Lite server), ``admin``
(maintenance: the scheduled re-queueing of stale claims, metadata changes the vector store missed,
and ``index build``'s re-embedding, a few batches at a time so that catalog ingestion keeps going).
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from workers.ingest import group_by_job

INGEST_QUEUE, INDEX_QUEUE, ADMIN_QUEUE = "ingest", "index", "admin"
INGEST_TASK = "clothes_search.ingest_batch"
INDEX_TASK = "clothes_search.index_batch"
REQUEUE_TASK = "clothes_search.requeue_stale"
SYNC_FIELDS_TASK = "clothes_search.sync_pending_fields"
REINDEX_TASK = "clothes_search.reindex_batch"
TASK_ROUTES = {
    REINDEX_TASK: {"queue": ADMIN_QUEUE},
    INGEST_TASK: {"queue": INGEST_QUEUE},
    INDEX_TASK: {"queue": INDEX_QUEUE},
    REQUEUE_TASK: {"queue": ADMIN_QUEUE},
    SYNC_FIELDS_TASK: {"queue": ADMIN_QUEUE},
}


def dispatch_batches(app: Celery, items: Sequence[tuple[str, int | None]], batch_size: int) -> int:
    """Send ``(sku, job id)`` pairs as ingest tasks of at most ``batch_size`` items; returns tasks sent."""
    sent = 0
    for job_id, skus in group_by_job(items).items():
        for start in range(0, len(skus), batch_size):
            app.send_task(INGEST_TASK, args=[skus[start : start + batch_size], job_id], ignore_result=True)
            sent += 1
    return sent
