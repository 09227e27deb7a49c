"""Operational endpoints: readiness, Prometheus metrics and the OpenAPI document.

``GET /readyz`` — 200 ``{"status": "ready", "checks": {"database": "ok", "vector_store": "ok",
"models": "ok", "index": "<live collection>" | "none"}}`` when

- the database answers ``SELECT 1`` (then the live index version is read from it: ``index``);
- the vector store answers (it lists its collections; the live collection must be among them);
- the pipeline's models are loaded. **The first call loads them** (seconds to a minute with the
  default models): give the probe's first run the time, or call ``/readyz`` once at start-up to
  warm the process. Later calls find them loaded and return at once.

Otherwise 503 with ``"status": "not_ready"``, the failing checks as ``"failed: <kind>"`` and their
names in ``failing`` (plus ``Retry-After``); a check never turns into a 500. ``index`` is ``none``
while no index is live (the server is ready to ingest; ``/similar`` answers 503 until then) and
``unknown`` when the database is down. Every check runs, each waiting at most its backend's own
timeout (``milvus.timeout_s``; for PostgreSQL add ``?connect_timeout=<s>`` to the database URL).
The messages go to the log, not to the client.

``GET /metrics`` — see :mod:`search.metrics`. ``GET /openapi.json`` — see :mod:`search.openapi`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from clothes_search.errors import ClothesSearchError
from clothes_search.services import Services
from clothes_search.settings import ApiSettings
from db.api_keys import Role
from db.index_versions import live_version
from search.api_services import ApiServices
from search.auth import requires
from search.errors import RETRY_AFTER_S
from search.metrics import ApiMetrics
from search.openapi import openapi_document

log = logging.getLogger(__name__)

ops = Blueprint("ops", __name__)

OK = "ok"
NO_INDEX = "none"
UNKNOWN = "unknown"
T = TypeVar("T")


class _CheckFailed(Exception):
    """A readiness check failed; ``outcome`` is what the answer shows for it."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def _run(name: str, check: Callable[[], T]) -> T:
    """``check()``, any exception (logged) becoming :class:`_CheckFailed` with its kind."""
    try:
        return check()
    except Exception as exc:
        kind = exc.kind if isinstance(exc, ClothesSearchError) else type(exc).__name__
        log.warning("readiness check %s failed: %s: %s", name, kind, exc)
        raise _CheckFailed(f"failed: {kind}") from exc


def _ping(services: Services) -> bool:
    with services.database.session() as session:
        session.execute(text("SELECT 1"))
    return True


def _live_collection(services: Services) -> str | None:
    with services.database.session() as session:
        version = live_version(session)
        return version.collection_name if version is not None else None


def readiness(services: Services) -> tuple[dict[str, str], list[str]]:
    """Run every check: what each shows, and the names of the failing ones."""
    checks: dict[str, str] = {}
    failing: list[str] = []

    def record(name: str, check: Callable[[], T]) -> T | None:
        try:
            result = _run(name, check)
        except _CheckFailed as failed:
            checks[name] = failed.outcome
            failing.append(name)
            return None
        checks[name] = OK
        return result

    database_ok = record("database", lambda: _ping(services))
    collections = record("vector_store", lambda: services.store.list_collections())
    record("models", lambda: services.pipeline.load())
    if not database_ok:
        checks["index"] = UNKNOWN
        return checks, failing
    live = record("index", lambda: _live_collection(services))  # e.g. a schema not migrated
    if "index" in failing:
        return checks, failing
    checks["index"] = live or NO_INDEX
    if live is not None and collections is not None and live not in collections:
        log.warning("readiness: the live collection %r is missing from the vector store", live)
        checks["index"] = f"failed: missing {live}"
        failing.append("index")
    return checks, failing


@ops.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Readiness: 200 when the backends and the models answer, else 503 naming the failing checks."""
    try:
        checks, failing = readiness(ApiServices.of(current_app).services)
    except Exception:  # never a 500: a probe only needs "not ready"
        log.exception("readiness checks could not run")
        checks = {name: UNKNOWN for name in ("database", "vector_store", "models", "index")}
        failing = ["services"]
    if not failing:
        return jsonify(status="ready", checks=checks)
    response = jsonify(status="not_ready", checks=checks, failing=failing)
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _public_metrics(settings: ApiSettings) -> bool:
    return settings.public_metrics


@ops.get("/metrics")
@requires(Role.ADMIN, public=_public_metrics)
def metrics() -> ResponseReturnValue:
    """This app's metrics (every worker's with ``PROMETHEUS_MULTIPROC_DIR``), as Prometheus text."""
    body, content_type = ApiMetrics.of(current_app).exposition(request.headers.get("Accept"))
    return Response(body, content_type=content_type)


@ops.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    """The OpenAPI 3.0.3 document of this API."""
    return jsonify(openapi_document(ApiServices.of(current_app).settings.search))
