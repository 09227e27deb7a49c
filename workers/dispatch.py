"""Getting queued items processed: by Celery workers, or in this process when no broker is set.

:func:`make_dispatcher` is the one place that chooses: the API and ``clothes-search ingest`` both
call it. With ``queue.broker_url`` set, batches go to the workers through Redis; without one (the
embedded default) they run here, either before ``submit`` returns (the CLI, the evaluation) or,
with ``background=True``, one after another on a thread of this process (the API answers at once).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from clothes_search.errors import ClothesSearchError
from clothes_search.services import Services
from workers.ingest import BatchOutcome, group_by_job, prepare_batch, requeue_stale, write_batch

log = logging.getLogger(__name__)


class QueueUnavailableError(ClothesSearchError):
    """The ingestion queue's broker cannot be reached: the items stay pending, retry the request."""

    kind = "queue_unavailable"


class Dispatcher(Protocol):
    def submit(self, skus: Sequence[str], job_id: int | None) -> None:
        """Get ``skus`` (of job ``job_id``) processed."""

    def requeue_stale(self) -> list[str]:
        """Queue again the items whose worker died holding them; returns their skus."""

    def close(self) -> None:
        """Finish what was accepted and release what the dispatcher holds."""


class CeleryDispatcher:
    """Sends ingest tasks to the broker; workers do the rest."""

    def __init__(self, services: Services) -> None:
        from workers.celery_app import create_celery

        self.services = services
        self.app = create_celery(services.settings)

    def submit(self, skus: Sequence[str], job_id: int | None) -> None:
        """Raises :class:`QueueUnavailableError` when the broker cannot be reached (the items stay
        ``pending``: submitting them again queues them again)."""
        self._send([(sku, job_id) for sku in skus])

    def requeue_stale(self) -> list[str]:
        stale = requeue_stale(self.services.database, self.services.settings.queue.stale_claim_s)
        self._send(stale)
        return [sku for sku, _ in stale]

    def _send(self, items: Sequence[tuple[str, int | None]]) -> None:
        import kombu.exceptions
        import redis.exceptions

        from workers.routing import dispatch_batches

        try:
            dispatch_batches(self.app, items, self.services.settings.queue.ingest_batch_size)
        except (
            kombu.exceptions.OperationalError,
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        ) as exc:
            raise QueueUnavailableError(f"cannot reach the ingestion queue's broker: {exc}") from exc

    def close(self) -> None:
        self.app.close()


class InProcessDispatcher:
    """Runs each batch right here before ``submit`` returns (no Redis, no workers)."""

    def __init__(self, services: Services, on_batch: Callable[[BatchOutcome], None] | None = None) -> None:
        self.services = services
        self.on_batch = on_batch

    def submit(self, skus: Sequence[str], job_id: int | None) -> None:
        queue = self.services.settings.queue
        pending = list(skus)
        requeued: list[tuple[str, int | None]] = []  # images replaced meanwhile, under their new job
        while pending:
            due: list[tuple[float, str]] = []
            for start in range(0, len(pending), queue.ingest_batch_size):
                chunk = pending[start : start + queue.ingest_batch_size]
                batch = prepare_batch(self.services, chunk, token=uuid.uuid4().hex, job_id=job_id)
                outcome = write_batch(self.services, batch)
                due.extend((delay, sku) for sku, delay in outcome.retry_after.items())
                requeued.extend(outcome.requeue.items())
                if self.on_batch is not None:
                    self.on_batch(outcome)
            if due:
                wait = max(delay for delay, _ in due)
                log.info("retrying %d items with transient failures in %.1fs", len(due), wait)
                time.sleep(wait)
            pending = [sku for _, sku in due]
        for other_job, again in group_by_job(requeued).items():
            self.submit(again, other_job)

    def requeue_stale(self) -> list[str]:
        stale = requeue_stale(self.services.database, self.services.settings.queue.stale_claim_s)
        for job_id, skus in group_by_job(stale).items():
            self.submit(skus, job_id)
        return [sku for sku, _ in stale]

    def close(self) -> None:
        pass


class BackgroundDispatcher:
    """An :class:`InProcessDispatcher` on one thread: ``submit`` returns at once, batches run in order
    (as a single worker would run them). :meth:`close` drains what was accepted."""

    def __init__(self, inner: InProcessDispatcher) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, skus: Sequence[str], job_id: int | None) -> None:
        future = self._pool().submit(self.inner.submit, list(skus), job_id)
        future.add_done_callback(_log_failure)

    def requeue_stale(self) -> list[str]:
        return self.inner.requeue_stale()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
            return self._executor

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        # the items stay pending or processing; `index reconcile` / a later submission picks them up
        log.error("in-process ingestion failed", exc_info=exc)


def make_dispatcher(
    services: Services,
    *,
    background: bool = False,
    on_batch: Callable[[BatchOutcome], None] | None = None,
) -> Dispatcher:
    """Celery when ``queue.broker_url`` is set, else in-process (on a thread with ``background``).

    ``on_batch`` sees each batch's outcome of in-process ingestion (a progress bar).
    """
    if services.settings.queue.broker_url:
        return CeleryDispatcher(services)
    in_process = InProcessDispatcher(services, on_batch)
    return BackgroundDispatcher(in_process) if background else in_process
