"""An API process following the index versions: the models it may have to answer with are loaded ahead.

Every ``versions.heartbeat_s`` a :class:`VersionWatcher` thread reads the versions and loads the models
of the live version, of the one an ``index activate`` asks for and (``versions.preload_building``) of
those being built; it lets go of the others, then reports the signatures it holds (a heartbeat row,
:mod:`db.serving_processes`). ``index activate`` waits for that report from every API process before
it swaps the alias, so no request after a switch waits for a model to load, and a request never mixes
two versions' models (it reads the live version once, :func:`search.query_stages.live_index`).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import or_, select

from clothes_search.errors import ClothesSearchError
from clothes_search.services import Services
from db.models import IndexState, IndexVersion
from db.serving_processes import API_ROLE, forget, report, this_process_id

log = logging.getLogger(__name__)


class VersionWatcher:
    """The thread that keeps one API process's models in step with the index versions."""

    def __init__(self, services: Services, role: str = API_ROLE) -> None:
        self.services = services
        self.role = role
        self.process_id = this_process_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Look once now (the caller waits for the models it needs), then every heartbeat on a thread."""
        self.poll()
        self._thread = threading.Thread(target=self._run, name="version-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.services.settings.versions.heartbeat_s
        while not self._stop.wait(interval):
            try:
                self.poll()
            except Exception:  # a database hiccup must not end the watch; the next beat tries again
                log.exception("watching the index versions failed; trying again in %.1f s", interval)

    def poll(self) -> set[str]:
        """Load the models of the versions this process may have to serve, drop the rest, report."""
        settings = self.services.settings.versions
        wanted = [IndexVersion.state == IndexState.LIVE, IndexVersion.activation_requested_at.is_not(None)]
        if settings.preload_building:
            wanted.append(IndexVersion.state == IndexState.BUILDING)
        with self.services.database.session() as session:
            versions = [
                (v.signature, v.models)
                for v in session.scalars(select(IndexVersion).where(or_(*wanted)).order_by(IndexVersion.id))
            ]
        needed = {signature for signature, _ in versions}
        for signature, models in versions:
            try:
                self.services.pipeline_for(signature, models)
            except ClothesSearchError as exc:  # not reported: an activation waiting for it says so
                log.error("cannot load the models of index version %s: %s", signature, exc)
        self.services.need_pipelines("serve", needed)
        loaded = self.services.loaded_signatures()
        with self.services.database.session() as session:
            report(session, self.process_id, self.role, sorted(loaded))
        return loaded

    def stop(self) -> None:
        """End the watch and remove this process's report (it no longer serves)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            with self.services.database.session() as session:
                forget(session, self.process_id)
        except ClothesSearchError as exc:
            log.warning("could not remove this process's report: %s", exc)
