"""The Celery application: Redis broker, one queue per workload (:mod:`workers.routing`).

Tasks are acknowledged late and rejected back to the queue when their worker process dies, so a
killed worker loses no batch. Celery finds the tasks with ``include=`` (:mod:`workers.tasks`);
each worker process makes its own services after the fork (:mod:`workers.worker_services`).
A beat schedule re-queues stale claims (items whose worker died) every ``queue.stale_claim_s / 2``
seconds and completes metadata changes the vector store missed every ``queue.sync_fields_every_s``;
``clothes-search worker --beat`` runs it inside a worker.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from clothes_search.settings import Settings
from workers import worker_services
from workers.routing import (
    ADMIN_QUEUE,
    INDEX_QUEUE,
    INGEST_QUEUE,
    REQUEUE_TASK,
    SYNC_FIELDS_TASK,
    TASK_ROUTES,
)

MIN_REQUEUE_INTERVAL_S = 1.0


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings.queue`` (the broker URL must be set)."""
    queue = settings.queue
    if not queue.broker_url:
        raise ValueError("queue.broker_url is not set: ingestion runs in-process")
    app = Celery(
        "clothes_search",
        broker=queue.broker_url,
        backend=queue.result_backend or queue.broker_url,
        include=["workers.tasks"],
    )
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
        task_routes=TASK_ROUTES,
        beat_schedule={
            "requeue-stale-claims": {
                "task": REQUEUE_TASK,
                "schedule": max(MIN_REQUEUE_INTERVAL_S, queue.stale_claim_s / 2),
            },
            "sync-pending-fields": {"task": SYNC_FIELDS_TASK, "schedule": queue.sync_fields_every_s},
        },
        # a child whose memory grew past this is replaced after its task (images are decoded in it)
        worker_max_memory_per_child=queue.max_memory_per_child_mb * 1024,
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    worker_services.configure(settings)
    return app
