"""Which processes serve the index, and which models each one has loaded (a heartbeat per process).

Each API process writes its row every ``versions.heartbeat_s`` (:class:`~db.models.ServingProcess`):
the model signatures it can answer with. ``index activate`` waits until every API process seen lately
lists the new version's signature, so that no request after the switch waits for a model to load.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import ServingProcess, utcnow

API_ROLE = "api"
SEEN_WITHIN_BEATS = 3  # a process not heard of for this many heartbeats is gone


def this_process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def report(session: Session, process_id: str, role: str, signatures: Sequence[str]) -> None:
    """Record that ``process_id`` is alive and has these models loaded."""
    now = utcnow()
    row = session.get(ServingProcess, process_id)
    if row is None:
        session.add(
            ServingProcess(
                id=process_id, role=role, signatures=sorted(signatures), started_at=now, seen_at=now
            )
        )
    else:
        row.role, row.signatures, row.seen_at = role, sorted(signatures), now


def forget(session: Session, process_id: str) -> None:
    """Remove a process that stops serving."""
    session.execute(delete(ServingProcess).where(ServingProcess.id == process_id))


def recent(session: Session, heartbeat_s: float, role: str | None = API_ROLE) -> list[ServingProcess]:
    """The processes (of ``role``) heard of within a few heartbeats."""
    since = utcnow() - timedelta(seconds=SEEN_WITHIN_BEATS * heartbeat_s)
    query = select(ServingProcess).where(ServingProcess.seen_at > since)
    if role is not None:
        query = query.where(ServingProcess.role == role)
    return list(session.scalars(query.order_by(ServingProcess.id)))


def lacking(session: Session, heartbeat_s: float, signature: str) -> list[str]:
    """The API processes seen lately that do not have the models of ``signature`` loaded."""
    return [p.id for p in recent(session, heartbeat_s) if signature not in (p.signatures or [])]
