"""API keys: created once (the secret is shown once and stored only as a SHA-256), checked in constant
time, revoked by id.

A key reads ``cs_<key id>_<secret>``: the id (public, 10 base32 characters) finds the row, the secret
(32 random bytes, URL-safe base64) is what proves it. A SHA-256 is enough for a secret of 256 random
bits (no dictionary to attack, unlike a password); :func:`hmac.compare_digest` compares the digests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from clothes_search.errors import ClothesSearchError
from db.models import ApiKey, utcnow

KEY_PREFIX = "cs"
KEY_RE = re.compile(r"^cs_([a-z2-7]{10})_([A-Za-z0-9_-]{43})$")
LAST_USED_EVERY = timedelta(minutes=1)


class Role(StrEnum):
    SEARCH = "search"  # /similar (when the settings make it private)
    CATALOG = "catalog"  # submit rows, read items and jobs
    ADMIN = "admin"  # everything: deletions, index operations, metrics


ROLES_OF_BOOTSTRAP_KEY = ("admin",)


class ApiKeyError(ClothesSearchError):
    kind = "api_key"


@dataclass(frozen=True)
class Principal:
    """Who a request is: the key's id and name, and its roles."""

    key_id: str
    name: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return Role.ADMIN in self.roles or role in self.roles


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once, never stored
    principal: Principal


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(key: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else None."""
    found = KEY_RE.match(key.strip())
    return (found.group(1), found.group(2)) if found else None


def new_key_text() -> str:
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
    return f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)[:43]}"


def _roles(roles: Iterable[str]) -> list[str]:
    try:
        chosen = sorted({Role(r) for r in roles})
    except ValueError as exc:
        raise ApiKeyError(f"unknown role: {exc} (roles: {', '.join(r.value for r in Role)})") from None
    if not chosen:
        raise ApiKeyError("a key needs at least one role")
    return [r.value for r in chosen]


def create_key(session: Session, name: str, roles: Iterable[str], key: str | None = None) -> NewKey:
    """Store a new key (or the given well-formed ``key``, e.g. bootstrapped from the environment)."""
    text = key or new_key_text()
    parsed = parse_key(text)
    if parsed is None:
        raise ApiKeyError("a key reads cs_<10 base32 characters>_<43 URL-safe characters>")
    key_id, secret = parsed
    if _stored(session, key_id) is not None:
        raise ApiKeyError(f"a key with id {key_id} exists")
    row = ApiKey(key_id=key_id, name=name[:128], secret_sha256=_digest(secret), roles=_roles(roles))
    session.add(row)
    session.flush()
    return NewKey(text, _principal(row))


def ensure_key(session: Session, key: str, name: str, roles: Iterable[str]) -> Principal:
    """The stored key ``key``, created if absent (idempotent: a bootstrapped admin key)."""
    parsed = parse_key(key)
    if parsed is None:
        raise ApiKeyError("the bootstrap key is malformed: make one with `clothes-search keys generate`")
    row = _stored(session, parsed[0])
    if row is None:
        return create_key(session, name, roles, key).principal
    if not hmac.compare_digest(row.secret_sha256, _digest(parsed[1])):
        raise ApiKeyError(f"key {parsed[0]} exists with another secret")
    return _principal(row)


def authenticate(session: Session, key: str) -> Principal | None:
    """The key's principal when it is well formed, stored, not revoked and its secret matches."""
    parsed = parse_key(key)
    if parsed is None:
        return None
    row = _stored(session, parsed[0])
    if row is None or row.revoked_at is not None:
        _digest(parsed[1])  # the same work either way
        return None
    if not hmac.compare_digest(row.secret_sha256, _digest(parsed[1])):
        return None
    now = utcnow()
    last = row.last_used_at
    if last is None or now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo)) > LAST_USED_EVERY:
        row.last_used_at = now  # at most once a minute: not a database write per request
    return _principal(row)


def principal_of(session: Session, key_id: str) -> Principal | None:
    """The principal of a stored key that is not revoked (a web session names its key by id)."""
    row = _stored(session, key_id)
    return None if row is None or row.revoked_at is not None else _principal(row)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke a key by id; False when there is no such (unrevoked) key."""
    row = _stored(session, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def _stored(session: Session, key_id: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))


def _principal(row: ApiKey) -> Principal:
    return Principal(row.key_id, row.name, frozenset(Role(r) for r in row.roles))
