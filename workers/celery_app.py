"""The Celery application: Redis broker, one queue per workload, resources per worker process.

Queues: ``ingest`` (fetch + detect + embed: CPU/GPU heavy, many workers), ``index`` (Milvus and
database writes: one consumer suffices and is required with a Milvus Lite server), ``admin``
(re-indexing and maintenance). Tasks are acknowledged late and rejected back to the queue when
their worker process dies, so a killed worker loses no batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery, signals
from kombu import Queue

from clothes_search.settings import Settings
from workers.ingest import group_by_job
from workers.resources import WorkerResources

log = logging.getLogger(__name__)

INGEST_QUEUE, INDEX_QUEUE, ADMIN_QUEUE = "ingest", "index", "admin"
INGEST_TASK = "clothes_search.ingest_batch"
INDEX_TASK = "clothes_search.index_batch"
REQUEUE_TASK = "clothes_search.requeue_stale"

_state: dict[
    str, object
] = {}  # this process's Settings and WorkerResources (set by create_celery / after fork)


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings.queue`` (the broker URL must be set)."""
    queue = settings.queue
    if not queue.broker_url:
        raise ValueError("queue.broker_url is not set: ingestion runs in-process")
    app = Celery("clothes_search", broker=queue.broker_url, backend=queue.result_backend or queue.broker_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # progress lives in the database; nothing reads task results
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_time_limit=queue.task_time_limit_s,
        broker_transport_options={
            "visibility_timeout": queue.visibility_timeout_s,
            # sweep for tasks of dead workers often enough that redelivery follows the timeout closely
            "unacked_restore_interval": max(1, min(10, queue.visibility_timeout_s // 5)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        result_expires=24 * 3600,
        task_queues=(Queue(INGEST_QUEUE), Queue(INDEX_QUEUE), Queue(ADMIN_QUEUE)),
        task_default_queue=INGEST_QUEUE,
        task_routes={
            INGEST_TASK: {"queue": INGEST_QUEUE},
            INDEX_TASK: {"queue": INDEX_QUEUE},
            REQUEUE_TASK: {"queue": ADMIN_QUEUE},
        },
    )
    _state["settings"] = settings
    import workers.tasks  # noqa: F401 - registers the tasks on this app

    return app


def dispatch_batches(app: Celery, items: Sequence[tuple[str, int | None]], batch_size: int) -> int:
    """Send ``(sku, job id)`` pairs as ingest tasks of at most ``batch_size`` items; returns tasks sent."""
    sent = 0
    for job_id, skus in group_by_job(items).items():
        for start in range(0, len(skus), batch_size):
            app.send_task(INGEST_TASK, args=[skus[start : start + batch_size], job_id], ignore_result=True)
            sent += 1
    return sent


def resources() -> WorkerResources:
    """This worker process's resources (created on first use after the fork)."""
    found = _state.get("resources")
    if found is None:
        settings = _state.get("settings")
        if not isinstance(settings, Settings):
            raise RuntimeError("create_celery() was not called in this process")
        found = WorkerResources(settings)
        _state["resources"] = found
    assert isinstance(found, WorkerResources)
    return found


@signals.worker_process_init.connect
def _after_fork(**_: object) -> None:
    # drop anything inherited from the parent; the child makes its own connections and models
    _state.pop("resources", None)


@signals.worker_process_shutdown.connect
def _before_exit(**_: object) -> None:
    found = _state.pop("resources", None)
    if isinstance(found, WorkerResources):
        found.close()
