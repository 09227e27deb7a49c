"""The composition root: the heavy objects of one process (database engine, Milvus client, models).

The API (:mod:`search.api_services`), the Celery workers (:mod:`workers.worker_services`), the CLI
and the evaluation all build their process's connections and models here, and nowhere else. Create
one :class:`Services` per process *after* any fork (Celery's ``worker_process_init``, gunicorn's
post-fork); nothing connects or loads at construction: each object is made on first use.

Models per index version: :attr:`Services.pipeline` runs this process's configured models;
:meth:`Services.pipeline_for` gives the pipeline of any index version — the configured one when the
version is of its signature, else one loaded from the model set the version recorded
(:mod:`ingestion.model_sets`), kept while some use of the process still needs it
(:meth:`Services.need_pipelines`: serving needs the live version's models, ingestion those of every
version it writes to). So a process can serve the live version, write to a version being built and
follow a switch without a restart, and lets go of models no longer needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session

from clothes_search.errors import ClothesSearchError
from clothes_search.settings import Settings
from db.index_versions import activate, ensure_index_version, live_version
from db.models import IndexVersion
from db.session import Database
from db.vectors import VectorStore
from ingestion.model_sets import ModelSet, ModelSetMismatchError
from ingestion.pipeline import Pipeline

log = logging.getLogger(__name__)


class ModelsUnavailableError(ClothesSearchError):
    """An index version whose models this process cannot load (none recorded, or their files changed)."""

    kind = "index_not_ready"


class Services:
    """The settings, the metadata database, the vector store and the pipelines of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = Database(settings.database)
        self._store: VectorStore | None = None
        self._pipeline: Pipeline | None = None
        self._version_id: int | None = None
        self._lock = threading.Lock()
        self._pipelines: dict[str, Pipeline] = {}  # by signature: other versions' model sets
        self._loading: dict[str, threading.Lock] = {}  # one load per signature at a time
        self._needs: dict[str, set[str]] = {}  # use of this process -> the signatures it needs

    @property
    def store(self) -> VectorStore:
        with self._lock:
            if self._store is None:
                self._store = VectorStore(self.settings.milvus)
            return self._store

    @property
    def pipeline(self) -> Pipeline:
        """The configured models (``settings.detectors`` / ``embedders``)."""
        with self._lock:
            if self._pipeline is None:
                self._pipeline = Pipeline(self.settings)
            return self._pipeline

    def model_set(self) -> ModelSet:
        return ModelSet.of(self.settings)

    def pipeline_for(self, signature: str, models: dict[str, Any] | None) -> Pipeline:
        """The loaded pipeline of an index version of ``signature`` whose recorded model set is ``models``.

        Loads it on first use (seconds: the API loads the versions it may serve ahead, see
        :class:`search.version_watch.VersionWatcher`). Raises :class:`ModelsUnavailableError` when the
        version recorded no models (made by an older release) or they no longer give its signature.
        """
        configured = self.pipeline
        if configured.signature.hash == signature:
            return configured.load()
        with self._lock:
            found = self._pipelines.get(signature)
            loading = self._loading.setdefault(signature, threading.Lock())
        if found is not None:
            return found
        with loading:
            with self._lock:
                found = self._pipelines.get(signature)
            if found is not None:
                return found
            pipeline = self._load(signature, models)
            with self._lock:
                self._pipelines[signature] = pipeline
            return pipeline

    def _load(self, signature: str, models: dict[str, Any] | None) -> Pipeline:
        if not models:
            raise ModelsUnavailableError(
                f"the index version of models {signature} recorded no model set (made by an older release) "
                f"and this process runs {self.pipeline.signature.hash}: configure its models, or build "
                "the index again with `clothes-search index build`"
            )
        try:
            pipeline = Pipeline(ModelSet.from_dict(models).applied_to(self.settings)).load()
        except ClothesSearchError as exc:
            message = f"cannot load the models of index version {signature}: {exc}"
            raise ModelsUnavailableError(message) from exc
        if pipeline.signature.hash != signature:
            raise ModelSetMismatchError(
                f"the recorded models of index version {signature} now give {pipeline.signature.hash} "
                "(their weight files changed): rebuild that version with `clothes-search index build`"
            )
        pipeline.analyse([Image.new("RGB", (64, 64), "white")])  # first-call allocations, not in a request
        log.info("loaded the models of index version %s: %s", signature, pipeline.signature.description)
        return pipeline

    def loaded_signatures(self) -> set[str]:
        """The signatures this process can embed for without loading anything."""
        with self._lock:
            loaded = set(self._pipelines)
            configured = self._pipeline
        if configured is not None and configured.loaded:
            loaded.add(configured.signature.hash)
        return loaded

    def need_pipelines(self, use: str, signatures: Iterable[str]) -> list[str]:
        """Say which model sets ``use`` (e.g. 'serve', 'ingest') needs from now on, and let go of those no
        use needs any more (never the configured one); returns the signatures let go."""
        with self._lock:
            self._needs[use] = set(signatures)
            needed = set().union(*self._needs.values())
            dropped = [s for s in self._pipelines if s not in needed]
            for signature in dropped:
                del self._pipelines[signature]
        for signature in dropped:
            log.info("released the models of index version %s", signature)
        return dropped

    def configured_version(self, session: Session) -> IndexVersion:
        """The index version of the configured models, with their model set (created if missing)."""
        signature = self.pipeline.signature
        return ensure_index_version(
            session,
            self.store,
            signature=signature.hash,
            dimension=signature.dim,
            description=signature.description,
            spec=signature.to_dict(),
            runtimes={e.name: e.runtime for e in self.pipeline.embedders},
            models=self.model_set().to_dict(),
        )

    def target_version_id(self) -> int:
        """The index version of the configured models; made live if none is live yet (a first ingestion)."""
        if self._version_id is None:
            with self.database.session() as session:
                version = self.configured_version(session)
                if live_version(session) is None:
                    activate(session, self.store, version)
                self._version_id = version.id
        return self._version_id

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self.database.dispose()
