"""The composition root: the heavy objects of one process (database engine, Milvus client, models).

The API (:mod:`search.api_services`), the Celery workers (:mod:`workers.worker_services`), the CLI
and the evaluation all build their process's connections and models here, and nowhere else. Create
one :class:`Services` per process *after* any fork (Celery's ``worker_process_init``, gunicorn's
post-fork); nothing connects or loads at construction: each object is made on first use.
"""

from __future__ import annotations

import threading

from clothes_search.settings import Settings
from db.index_versions import activate, ensure_index_version, live_version
from db.session import Database
from db.vectors import VectorStore
from ingestion.pipeline import Pipeline


class Services:
    """The settings, the metadata database, the vector store and the pipeline of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = Database(settings.database)
        self._store: VectorStore | None = None
        self._pipeline: Pipeline | None = None
        self._version_id: int | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> VectorStore:
        with self._lock:
            if self._store is None:
                self._store = VectorStore(self.settings.milvus)
            return self._store

    @property
    def pipeline(self) -> Pipeline:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = Pipeline(self.settings)
            return self._pipeline

    def target_version_id(self) -> int:
        """The index version for the pipeline's model signature; made live if none is live yet."""
        if self._version_id is None:
            signature = self.pipeline.signature
            with self.database.session() as session:
                version = ensure_index_version(
                    session,
                    self.store,
                    signature=signature.hash,
                    dimension=signature.dim,
                    description=signature.description,
                    spec=signature.to_dict(),
                    runtimes={e.name: e.runtime for e in self.pipeline.embedders},
                )
                if live_version(session) is None:
                    activate(session, self.store, version)
                self._version_id = version.id
        return self._version_id

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self.database.dispose()
