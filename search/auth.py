"""Who may call what: API keys with roles (:mod:`db.api_keys`).

A key comes in ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). A view states the role it
needs with :func:`requires`: without a valid key it answers **401** (with ``WWW-Authenticate``), with
a key that lacks the role **403**. A key that is present but invalid is refused even where no key is
needed, so that a client learns its key is wrong. ``admin`` holds every role.

Public without a key: ``/healthz``, ``/readyz``, ``/openapi.json``, ``/similar`` (and the
thumbnails and facets a search page shows) while ``api.public_search`` is on (the embedded default),
``/metrics`` with ``api.public_metrics``.

The web app (:mod:`search.web`) signs a person in with the same keys: its session cookie names the
key (by id, never its secret), and stands for that key on reads (``GET``) and searches (``POST
/similar``), as long as the key is not revoked. Anything else that changes data takes a key in a
header, or goes through the web app's own forms, which carry a CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import current_app, g, request
from flask import session as web_session

from clothes_search.settings import ApiSettings
from db.api_keys import Principal, Role, authenticate, principal_of
from search.api_services import ApiServices
from search.errors import ApiError

P = ParamSpec("P")
R = TypeVar("R")
_UNSET = object()


def presented_key() -> str | None:
    """The key the request carries, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    direct = request.headers.get("X-API-Key", "").strip()
    return direct or None


def current_principal() -> Principal | None:
    """The request's verified key (looked up once per request), or None without one.

    Raises 401 when a key is presented but is unknown, revoked or malformed.
    """
    cached = g.get("principal", _UNSET)
    if cached is not _UNSET:
        return cached  # type: ignore[return-value]
    key = presented_key()
    principal = None
    api = ApiServices.of(current_app)
    if key is not None:
        api.ensure_bootstrap_key()
        with api.services.database.session() as db:
            principal = authenticate(db, key)
        if principal is None:
            raise _unauthorized("the API key is not valid (unknown, revoked or malformed)")
    elif web_session.get(SESSION_KEY) and _session_may_stand_for_the_key():
        with api.services.database.session() as db:
            principal = principal_of(db, str(web_session[SESSION_KEY]))
        if principal is None:  # revoked since the sign-in
            web_session.pop(SESSION_KEY, None)
    g.principal = principal
    return principal


SESSION_KEY = "key_id"  #: the web session's entry naming the signed-in key
_SESSION_WRITES = frozenset({"similar.post_similar"})  # searches by upload: nothing is changed


def _session_may_stand_for_the_key() -> bool:
    """Reads, and searches by upload: a session cookie stands for its key there (and in the web app's
    own views, which check a CSRF token on every form)."""
    return (
        request.method in ("GET", "HEAD")
        or request.endpoint in _SESSION_WRITES
        or (request.blueprint or "") == "web"
    )


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="clothes-search"'}
    )


def check_role(role: Role) -> Principal:
    """The request's principal, which must hold ``role`` (401 / 403 otherwise)."""
    principal = current_principal()
    if principal is None:
        raise _unauthorized(f"this needs an API key with the {role.value} role: Authorization: Bearer <key>")
    if not principal.has(role):
        raise ApiError(403, "forbidden", f"this API key lacks the {role.value} role")
    return principal


def requires(
    role: Role, *, public: Callable[[ApiSettings], bool] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A view decorator: the caller needs ``role``, unless ``public(settings.api)`` says no key is needed."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            settings = ApiServices.of(current_app).settings.api
            if public is not None and public(settings):
                current_principal()  # a wrong key is still refused
            else:
                check_role(role)
            return view(*args, **kwargs)

        return guarded

    return decorate


def may(role: Role) -> bool:
    """Whether the request's key (if any) holds ``role``: for views that show more to some callers."""
    principal = current_principal()
    return principal is not None and principal.has(role)
