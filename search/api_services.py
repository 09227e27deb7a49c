"""What one API process shares between its requests: the settings, the process's
:class:`~clothes_search.services.Services` and the ingestion dispatcher.

The factory (:func:`search.app.create_app`) registers an :class:`ApiServices` on the app; the
blueprints take it from here with :meth:`ApiServices.of`, never from the factory's module.
Nothing connects or loads at construction: the database engine, the Milvus client and the
models are made on first use, in the process that serves (after a pre-fork server's fork).

Ingestion: with ``queue.broker_url`` set, queued items are sent to the Celery workers; without
one (the embedded default) they are processed by a single background thread of this process,
so ``POST /items`` answers at once. :meth:`ApiServices.close` drains that thread and closes
the connections; call it when the process stops serving.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import Flask
from threadpoolctl import threadpool_limits

from clothes_search.services import Services
from clothes_search.settings import Settings
from db.api_keys import ROLES_OF_BOOTSTRAP_KEY, ensure_key
from search.request_limits import RequestLimits
from search.version_watch import VersionWatcher
from workers.dispatch import Dispatcher, make_dispatcher

EXTENSION = "clothes_search"
T = TypeVar("T")


class ApiServices:
    """The settings and the lazily created heavy objects of one API process.

    ``app.extensions["clothes_search"]`` holds it; views get it with :meth:`of`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._services: Services | None = None
        self._dispatcher: Dispatcher | None = None
        self._limits: RequestLimits | None = None
        self._bootstrapped = settings.api.bootstrap_admin_key is None
        self._watcher: VersionWatcher | None = None
        self._remembered: dict[str, tuple[float, Any]] = {}

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
    def services(self) -> Services:
        """This process's database, vector store and pipeline (each created on first use).

        The API's vector store never loads a collection inside a request (``milvus.load_on_read``
        off): a released one answers 503 while start-up (``serve``'s warm-up) loads it.
        """
        with self._lock:
            if self._services is None:
                # in the process that serves: the query-time numpy of its requests on one thread each
                threadpool_limits(self.settings.api.blas_threads, user_api="blas")
                milvus = self.settings.milvus.model_copy(update={"load_on_read": False})
                self._services = Services(self.settings.model_copy(update={"milvus": milvus}))
            return self._services

    def remembered(self, name: str, ttl_s: float, compute: Callable[[], T]) -> T:
        """``compute()``'s value, computed again when older than ``ttl_s`` (per process: e.g. facets)."""
        with self._lock:
            found = self._remembered.get(name)
        if found is not None and time.monotonic() - found[0] <= ttl_s:
            return found[1]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._remembered[name] = (time.monotonic(), value)
        return value

    def watch_versions(self) -> None:
        """Follow the index versions from now on (a serving process): load the models of the live version
        (and of those being built or about to go live) now and as they change; see
        :mod:`search.version_watch`."""
        services = self.services
        with self._lock:
            if self._watcher is not None:
                return
            watcher = self._watcher = VersionWatcher(services)
        watcher.start()

    @property
    def limits(self) -> RequestLimits:
        with self._lock:
            if self._limits is None:
                self._limits = RequestLimits(self.settings.api, self.settings.queue.broker_url)
            return self._limits

    def ensure_bootstrap_key(self) -> None:
        """Store ``api.bootstrap_admin_key`` (from the environment) if it is not yet: once per process."""
        if self._bootstrapped:
            return
        key = self.settings.api.bootstrap_admin_key
        assert key is not None
        with self.services.database.session() as session:
            ensure_key(session, key.get_secret_value(), "bootstrap", ROLES_OF_BOOTSTRAP_KEY)
        self._bootstrapped = True

    def dispatch(self, skus: Sequence[str], job_id: int) -> None:
        """Get the queued ``skus`` of job ``job_id`` processed; returns without waiting for them.

        Raises :class:`~workers.dispatch.QueueUnavailableError` when the broker cannot be reached
        (the items stay ``pending``: submitting them again queues them again).
        """
        if skus:
            self._get_dispatcher().submit(skus, job_id)

    def _get_dispatcher(self) -> Dispatcher:
        services = self.services
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = make_dispatcher(services, background=True)
            return self._dispatcher

    def close(self) -> None:
        """Finish the in-process ingestion already accepted, stop following the versions, then close
        connections."""
        with self._lock:
            dispatcher, self._dispatcher = self._dispatcher, None
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
        if dispatcher is not None:
            dispatcher.close()
        with self._lock:
            services, self._services = self._services, None
        if services is not None:
            services.close()
