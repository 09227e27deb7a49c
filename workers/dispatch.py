"""Getting queued items processed: by Celery workers, or in this process when no broker is set."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence

from clothes_search.settings import Settings
from workers.ingest import BatchOutcome, group_by_job, prepare_batch, requeue_stale, write_batch
from workers.resources import WorkerResources

log = logging.getLogger(__name__)


class CeleryDispatcher:
    """Sends ingest tasks to the broker; workers do the rest."""

    def __init__(self, settings: Settings) -> None:
        from workers.celery_app import create_celery

        self.settings = settings
        self.app = create_celery(settings)

    def submit(self, skus: Sequence[str], job_id: int | None) -> None:
        from workers.celery_app import dispatch_batches

        dispatch_batches(self.app, [(sku, job_id) for sku in skus], self.settings.queue.ingest_batch_size)

    def requeue_stale(self, resources: WorkerResources) -> list[str]:
        from workers.celery_app import dispatch_batches

        stale = requeue_stale(resources.database, self.settings.queue.stale_claim_s)
        dispatch_batches(self.app, stale, self.settings.queue.ingest_batch_size)
        return [sku for sku, _ in stale]


class InProcessDispatcher:
    """Runs each batch right here (the embedded default: no Redis, no workers)."""

    def __init__(
        self, resources: WorkerResources, on_batch: Callable[[BatchOutcome], None] | None = None
    ) -> None:
        self.resources = resources
        self.on_batch = on_batch

    def submit(self, skus: Sequence[str], job_id: int | None) -> None:
        queue = self.resources.settings.queue
        pending = list(skus)
        while pending:
            due: list[tuple[float, str]] = []
            for start in range(0, len(pending), queue.ingest_batch_size):
                chunk = pending[start : start + queue.ingest_batch_size]
                batch = prepare_batch(self.resources, chunk, token=uuid.uuid4().hex, job_id=job_id)
                outcome = write_batch(self.resources, batch)
                due.extend((delay, sku) for sku, delay in outcome.retry_after.items())
                if self.on_batch is not None:
                    self.on_batch(outcome)
            if due:
                wait = max(delay for delay, _ in due)
                log.info("retrying %d items with transient failures in %.1fs", len(due), wait)
                time.sleep(wait)
            pending = [sku for _, sku in due]

    def requeue_stale(self, resources: WorkerResources) -> list[str]:
        stale = requeue_stale(resources.database, resources.settings.queue.stale_claim_s)
        for job_id, skus in group_by_job(stale).items():
            self.submit(skus, job_id)
        return [sku for sku, _ in stale]
