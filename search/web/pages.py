"""The web app's pages (blueprint ``web``).

- ``GET /``: search by photo (public while ``api.public_search``, else the ``search`` role); the page's
  script calls the JSON API (``POST /similar``, ``GET /facets``, ``GET /items/<sku>/image``).
- ``GET|POST /login``, ``POST /logout``: sign in with an API key; the session cookie names the key
  (by id) and gives the page the key's roles (:mod:`search.auth`).
- ``GET /catalog`` (``admin``): ingestion jobs with live progress, failed items and their reasons with
  a retry button, index versions with an activate button. Its forms change data: each carries a CSRF
  token (Flask-WTF), and a request without one is refused.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from sqlalchemy import select

from clothes_search.errors import ClothesSearchError
from db.api_keys import Role, authenticate
from db.models import IndexVersion, IngestJob, Item, ItemStatus
from db.serving_processes import recent
from db.version_lifecycle import activate_when_ready, version_overview
from search.api_services import ApiServices
from search.auth import SESSION_KEY, current_principal
from workers.submit import job_progress, retry_failed

web = Blueprint(
    "web", __name__, template_folder="templates", static_folder="static", static_url_path="/web/static"
)
JOBS_SHOWN, FAILED_SHOWN = 20, 200
#: the pages load only this site's scripts and styles, talk only to this site, and are never framed;
#: images may come from anywhere (a query by image URL shows that image)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data: https: http:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


@web.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _api() -> ApiServices:
    return ApiServices.of(current_app)


def _may(role: Role) -> bool:
    principal = current_principal()
    return principal is not None and principal.has(role)


def _page_context() -> dict[str, Any]:
    principal = current_principal()
    return {
        "principal": principal,
        "is_admin": principal is not None and principal.has(Role.ADMIN),
        "public_search": _api().settings.api.public_search,
    }


def _to_login() -> ResponseReturnValue:
    return redirect(url_for("web.login", next=request.full_path.rstrip("?")))


@web.get("/")
def search_page() -> ResponseReturnValue:
    """Search by photo."""
    settings = _api().settings
    if not settings.api.public_search and not _may(Role.SEARCH):
        return _to_login()
    return render_template(
        "web/search.html",
        default_k=min(settings.search.default_k, 24),
        max_k=settings.search.max_k,
        rerank=settings.search.rerank,
        **_page_context(),
    )


def _safe_next(target: str | None) -> str:
    """A local path to go back to after signing in (never another site)."""
    if not target:
        return url_for("web.search_page")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("web.search_page")
    return target


@web.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign in with an API key."""
    next_page = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("web/login.html", next_page=next_page, error=None, **_page_context())
    key = request.form.get("key", "").strip()
    api = _api()
    api.ensure_bootstrap_key()
    with api.services.database.session() as db:
        principal = authenticate(db, key) if key else None
    if principal is None:
        error = "That key is not valid: it is unknown, revoked or mistyped."
        page = render_template("web/login.html", next_page=next_page, error=error, **_page_context())
        return page, 401
    session.clear()
    session[SESSION_KEY] = principal.key_id
    session.permanent = True
    return redirect(next_page)


@web.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("web.search_page"))


@web.get("/catalog")
def catalog_page() -> ResponseReturnValue:
    """Ingestion jobs, failed items and index versions (admin)."""
    if not _may(Role.ADMIN):
        if current_principal() is None:
            return _to_login()
        return render_template("web/forbidden.html", **_page_context()), 403
    api = _api()
    services = api.services
    with services.database.session() as db:
        job_ids = list(db.scalars(select(IngestJob.id).order_by(IngestJob.id.desc()).limit(JOBS_SHOWN)))
        failed = db.execute(
            select(Item.sku, Item.last_error, Item.updated_at)
            .where(Item.status == ItemStatus.FAILED)
            .order_by(Item.updated_at.desc())
            .limit(FAILED_SHOWN)
        ).all()
        versions = [
            version_overview(db, services.store, version, api.settings.versions.retention_s)
            for version in db.scalars(select(IndexVersion).order_by(IndexVersion.id))
        ]
        processes = recent(db, api.settings.versions.heartbeat_s, role=None)
    jobs = [job_progress(services.database, job_id, failures_limit=0) for job_id in job_ids]
    return render_template(
        "web/catalog.html",
        jobs=[job for job in jobs if job is not None],
        failed=failed,
        versions=versions,
        processes=processes,
        **_page_context(),
    )


@web.post("/catalog/items/<path:sku>/retry")
def retry_item(sku: str) -> ResponseReturnValue:
    """Queue a failed item again (admin; the form carries a CSRF token)."""
    if not _may(Role.ADMIN):
        return _to_login()
    api = _api()
    principal = current_principal()
    retried = retry_failed(api.services.database, [sku], principal.name if principal else "web")
    if retried.job_id is None:
        flash(f"{sku} is not a failed item (any more).", "warning")
    else:
        api.dispatch(retried.queued, retried.job_id)
        flash(f"{sku} queued again as job {retried.job_id}.", "info")
    return redirect(url_for("web.catalog_page"))


@web.post("/catalog/versions/<collection>/activate")
def activate_version(collection: str) -> ResponseReturnValue:
    """Make an index version live (admin; the form carries a CSRF token)."""
    if not _may(Role.ADMIN):
        return _to_login()
    api = _api()
    services = api.services
    try:
        done = activate_when_ready(services.database, services.store, collection, api.settings.versions)
    except ClothesSearchError as exc:
        flash(f"{collection} was not made live: {exc}", "error")
    else:
        flash(f"{collection} is live" + (f" (was {done.previous})" if done.previous else "") + ".", "info")
    return redirect(url_for("web.catalog_page"))


def refused_form(error: CSRFError) -> ResponseReturnValue:
    """A form without a valid CSRF token (the app's handler for Flask-WTF's error)."""
    return render_template("web/refused.html", reason=error.description, **_page_context()), 400
