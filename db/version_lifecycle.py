"""Switching, rolling back and removing index versions while the API serves.

- :func:`activate_when_ready`: refuses a version that does not hold the whole catalogue (unless
  forced) or a retired one past its retention (it stopped receiving writes); asks every API process
  to load the version's models (``activation_requested_at``), waits until each one seen lately
  reports them (:mod:`db.serving_processes`), then swaps the alias (:func:`db.index_versions.activate`).
  From that commit on, every request reads the new live version and answers with its models; the
  one before is ``retired`` and keeps receiving writes for ``versions.retention_s``.
- :func:`drop_version` / :func:`collect_garbage`: remove a version's collection(s), crop rows and item
  records; never the live one, never one still retained unless forced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clothes_search.errors import ClothesSearchError
from clothes_search.settings import VersionSettings
from db.index_versions import activate, is_retained, version_progress
from db.models import Crop, IndexState, IndexVersion, utcnow
from db.postprocessed_versions import PostprocessSpec
from db.serving_processes import lacking
from db.session import Database
from db.vectors import VectorStore


class VersionRefusedError(ClothesSearchError):
    """An index version operation that would lose data or answers (the message says why and how)."""

    kind = "version_refused"


@dataclass(frozen=True)
class Activation:
    collection: str
    previous: str | None
    waited_s: float
    processes: int  # API processes that had to load the models first


def activate_when_ready(
    database: Database,
    store: VectorStore,
    collection: str,
    settings: VersionSettings,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda _message: None,
) -> Activation:
    """Make the version of ``collection`` live once it is complete and every API process has its models."""
    with database.session() as session:
        version = _find(session, collection)
        if version.state == IndexState.LIVE:
            return Activation(collection, None, 0.0, 0)
        if not force:
            _check_can_serve(session, version, settings)
        version.activation_requested_at = utcnow()
        signature = version.signature
    started = time.monotonic()
    try:
        waiting = _wait_for_models(database, signature, settings, progress)
    except BaseException:
        _clear_request(database, collection)
        raise
    if waiting and not force:
        _clear_request(database, collection)
        raise VersionRefusedError(
            f"{len(waiting)} API process(es) did not load the models of {collection} within "
            f"{settings.activation_timeout_s:g} s ({', '.join(waiting[:5])}): see their logs (memory, model "
            "files); --force switches anyway (their requests then load the models themselves)"
        )
    with database.session() as session:
        version = _find(session, collection)
        previous = session.scalar(
            select(IndexVersion.collection_name).where(IndexVersion.state == IndexState.LIVE)
        )
        activate(session, store, version)
    return Activation(collection, previous, time.monotonic() - started, len(waiting))


def _find(session, collection: str) -> IndexVersion:  # noqa: ANN001 - a Session
    version = session.scalar(select(IndexVersion).where(IndexVersion.collection_name == collection))
    if version is None:
        raise VersionRefusedError(f"no index version {collection!r}: see `clothes-search index status`")
    return version


def _check_can_serve(session, version: IndexVersion, settings: VersionSettings) -> None:  # noqa: ANN001
    if not is_retained(version, settings.retention_s):
        raise VersionRefusedError(
            f"{version.collection_name} was retired more than {settings.retention_s:g} s ago "
            "(versions.retention_s) and has not received the catalog's changes since: build it again "
            "(`clothes-search index build`), or --force to serve it as it is"
        )
    progress = version_progress(session, version)
    if not progress.complete:
        raise VersionRefusedError(
            f"{version.collection_name} holds {progress.held} of the catalog's {progress.total} items: "
            "finish `clothes-search index build` first, or --force to serve it without the others"
        )


def _wait_for_models(
    database: Database, signature: str, settings: VersionSettings, progress: Callable[[str], None]
) -> list[str]:
    """Wait until every API process seen lately has the models of ``signature``; those still lacking."""
    deadline = time.monotonic() + settings.activation_timeout_s
    told = False
    while True:
        with database.session() as session:
            waiting = lacking(session, settings.heartbeat_s, signature)
        if not waiting or time.monotonic() > deadline:
            return waiting
        if not told:
            progress(f"waiting for {len(waiting)} API process(es) to load the models")
            told = True
        time.sleep(min(0.5, settings.heartbeat_s / 2))


def _clear_request(database: Database, collection: str) -> None:
    with database.session() as session:
        version = session.scalar(select(IndexVersion).where(IndexVersion.collection_name == collection))
        if version is not None:
            version.activation_requested_at = None


def version_overview(
    session: Session, store: VectorStore, version: IndexVersion, retention_s: float
) -> dict[str, Any]:
    """What `index status` and the catalog page show of a version: state, items held of the catalog,
    crop rows, vectors, models, post-processing, until when a retired one is retained."""
    rows = session.scalar(select(func.count(Crop.id)).where(Crop.index_version_id == version.rows_version_id))
    progress = version_progress(session, version)
    name = version.collection_name
    retained_until = None
    if version.state == IndexState.RETIRED and is_retained(version, retention_s) and version.retired_at:
        retained_until = (version.retired_at + timedelta(seconds=retention_s)).isoformat(timespec="seconds")
    return {
        "collection": name,
        "state": str(version.state),
        "signature": version.signature,
        "dimension": version.dimension,
        "items_held": progress.held,
        "items_total": progress.total,
        "complete": progress.complete,
        "crop_rows": int(rows or 0),
        "vectors": store.count(name) if store.has_collection(name) else 0,
        "description": version.signature_description,
        "postprocess": PostprocessSpec.from_dict(version.postprocess).describe()
        if version.postprocess
        else "",
        "retained_until": retained_until,
        "activation_requested": version.activation_requested_at is not None,
    }


def drop_version(
    database: Database, store: VectorStore, collection: str, settings: VersionSettings, *, force: bool = False
) -> list[str]:
    """Remove a version: its post-processed versions, crop rows, item records and collections.

    Refused for the live version (and the base of a live one), and, unless ``force``, for one being
    built or still retained (it can be made live again). Database first (the rows go at the commit),
    then Milvus; a crash in between leaves collections that no version names, which a second call
    (or `index gc`) drops. Returns the collections dropped.
    """
    with database.session() as session:
        version = _find(session, collection)
        family = [
            version,
            *session.scalars(select(IndexVersion).where(IndexVersion.base_version_id == version.id)),
        ]
        live = [v.collection_name for v in family if v.state == IndexState.LIVE]
        if live:
            raise VersionRefusedError(
                f"{live[0]} is live: make another version live first (`index activate`)"
            )
        if not force:
            kept = [
                v.collection_name
                for v in family
                if v.state == IndexState.BUILDING or is_retained(v, settings.retention_s)
            ]
            if kept:
                raise VersionRefusedError(
                    f"{kept[0]} is being built or still retained (versions.retention_s = "
                    f"{settings.retention_s:g} s: it can be made live again): --force to drop it anyway"
                )
        names = [v.collection_name for v in family]
        for member in family[1:]:
            session.delete(member)
        session.delete(version)  # its crop rows and item records go with it (ON DELETE CASCADE)
    for name in names:
        store.drop_collection(name)
    return names


def collect_garbage(database: Database, store: VectorStore, settings: VersionSettings) -> list[str]:
    """Drop every retired version past its retention (a base with its post-processed versions)."""
    with database.session() as session:
        retired = [
            v.collection_name
            for v in session.scalars(
                select(IndexVersion)
                .where(IndexVersion.state == IndexState.RETIRED)
                .order_by(IndexVersion.base_version_id.is_not(None), IndexVersion.id)  # bases first
            )
            if not is_retained(v, settings.retention_s)
        ]
    dropped: list[str] = []
    for name in retired:
        if name in dropped:
            continue
        try:
            dropped.extend(drop_version(database, store, name, settings))
        except VersionRefusedError:
            continue  # a base whose post-processed version is live, or is still retained
    return dropped
