"""The HTTP API: the application factory and the services one API process shares.

Run it with ``flask --app search.app:create_app run`` (development) or any WSGI server, e.g.
``gunicorn -w 2 'search.app:create_app()'``. No application object is created at import, and
:func:`create_app` connects to nothing and loads no model: the database engine, the Milvus client
and (for in-process ingestion) the models are created on first use, in the process that serves
(after a pre-fork server's fork).

Ingestion: with ``queue.broker_url`` set, queued items are sent to the Celery workers; without
one (the embedded default) they are processed by a single background thread of this process,
so ``POST /items`` answers at once. :meth:`ApiServices.close` drains that thread and closes
the connections; call it when the process stops serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import kombu.exceptions
import redis.exceptions
from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue

from clothes_search.settings import Settings
from search.errors import QueueUnavailableError, register_error_handlers
from workers.dispatch import CeleryDispatcher, InProcessDispatcher
from workers.resources import WorkerResources

log = logging.getLogger(__name__)

EXTENSION = "clothes_search"
MAX_CONTENT_LENGTH = 10 * 1024 * 1024  # larger request bodies answer 413
_BROKER_ERRORS = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness: the process answers HTTP (checks no backend; readiness is another probe)."""
    return jsonify(status="ok")


class ApiServices:
    """The settings and the lazily created heavy resources of one API process.

    ``app.extensions["clothes_search"]`` holds it; views get it with :meth:`of`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._resources: WorkerResources | None = None
        self._celery: CeleryDispatcher | None = None
        self._executor: ThreadPoolExecutor | None = None

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self

    @classmethod
    def of(cls, app: Flask) -> ApiServices:
        """The services registered on ``app`` by :meth:`init_app`."""
        services = app.extensions.get(EXTENSION)
        if not isinstance(services, cls):
            raise RuntimeError("the app was not built by search.app.create_app")
        return services

    @property
    def resources(self) -> WorkerResources:
        """This process's database, vector store and pipeline (each created on first use)."""
        with self._lock:
            if self._resources is None:
                self._resources = WorkerResources(self.settings)
            return self._resources

    def dispatch(self, skus: Sequence[str], job_id: int) -> None:
        """Get the queued ``skus`` of job ``job_id`` processed; returns without waiting for them.

        Raises :class:`QueueUnavailableError` when the broker cannot be reached (the items stay
        ``pending``: submitting them again queues them again).
        """
        if not skus:
            return
        if self.settings.queue.broker_url:
            try:
                self._celery_dispatcher().submit(skus, job_id)
            except _BROKER_ERRORS as exc:
                raise QueueUnavailableError(f"cannot enqueue job {job_id}: {exc}") from exc
            return
        future = self._ingest_executor().submit(self._ingest_here, list(skus), job_id)
        future.add_done_callback(_log_failure)

    def _celery_dispatcher(self) -> CeleryDispatcher:
        with self._lock:
            if self._celery is None:
                self._celery = CeleryDispatcher(self.settings)
            return self._celery

    def _ingest_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                # one thread: batches run one after another, as a single worker would run them
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
            return self._executor

    def _ingest_here(self, skus: list[str], job_id: int) -> None:
        log.info("ingesting job %d in-process: %d items", job_id, len(skus))
        InProcessDispatcher(self.resources).submit(skus, job_id)

    def close(self) -> None:
        """Finish the in-process ingestion already accepted, then close connections."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with self._lock:
            resources, self._resources = self._resources, None
            self._celery = None
        if resources is not None:
            resources.close()


def _log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        # the items stay pending or processing; `index reconcile` / a later submission picks them up
        log.error("in-process ingestion failed", exc_info=exc)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API application; ``settings`` default to :meth:`Settings.load` (environment, config)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    ApiServices(settings if settings is not None else Settings.load()).init_app(app)
    register_error_handlers(app)

    # one blueprint per area, imported here as in Flask's tutorial: they import this module
    from search.items_api import items
    from search.metrics import init_metrics
    from search.ops_api import ops
    from search.similar_api import similar

    init_metrics(app)
    app.register_blueprint(health)
    app.register_blueprint(items)
    app.register_blueprint(similar)
    app.register_blueprint(ops)
    return app
