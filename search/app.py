"""The HTTP API's application factory.

Run it with ``clothes-search serve`` (gunicorn, models warmed per worker), ``flask --app
search.app:create_app run`` (development) or any WSGI server, e.g. ``gunicorn -w 2
'search.app:create_app()'`` (the settings then come from the environment and the config file
that ``CLOTHES_SEARCH_CONFIG`` names). No application object is created at import, and
:func:`create_app` connects to nothing and loads no model (see :mod:`search.api_services`).
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from clothes_search.settings import Settings
from search.api_limits import MAX_CONTENT_LENGTH
from search.api_services import ApiServices
from search.auth import current_principal
from search.errors import register_error_handlers
from search.facets import facets
from search.items_api import items
from search.metrics import init_metrics
from search.ops_api import ops
from search.request_limits import DEFAULT, SEARCH
from search.similar_api import similar
from search.web.pages import refused_form, web
from search.web.secret import session_secret

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness: the process answers HTTP (checks no backend; readiness is another probe)."""
    return jsonify(status="ok")


#: probes answer without counting against anyone's rate
UNLIMITED_ENDPOINTS = frozenset({"health.healthz", "ops.readyz", "web.static"})


def _count_request() -> None:
    """Rate-limit every request but the probes: per API key, else per client address."""
    if request.endpoint in UNLIMITED_ENDPOINTS or request.endpoint is None:
        return
    principal = current_principal()  # a wrong key answers 401 here, before any work
    identity = f"key:{principal.key_id}" if principal else f"address:{request.remote_addr}"
    group = SEARCH if request.endpoint.startswith("similar.") else DEFAULT
    ApiServices.of(current_app).limits.check_rate(group, identity)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API application; ``settings`` default to :meth:`Settings.load` (environment, config)."""
    settings = settings if settings is not None else Settings.load()
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    if settings.api.proxy_hops:  # behind N proxies: the client address is theirs to tell
        hops = settings.api.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    ApiServices(settings).init_app(app)
    register_error_handlers(app)
    _init_web_sessions(app, settings)
    app.before_request(_count_request)
    init_metrics(app)
    app.register_blueprint(health)
    app.register_blueprint(items)
    app.register_blueprint(similar)
    app.register_blueprint(facets)
    app.register_blueprint(ops)
    app.register_blueprint(web)
    return app


def _init_web_sessions(app: Flask, settings: Settings) -> None:
    """Signed session cookies for the web app, and CSRF tokens on its forms. The JSON API takes keys in
    headers (no cookie), so its blueprints are exempt; the web app's forms are not."""
    app.secret_key = session_secret(settings)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.api.secure_cookies,
        SESSION_COOKIE_NAME="clothes_search_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as its session
    )
    csrf = CSRFProtect(app)
    for blueprint in (health, items, similar, facets, ops):
        csrf.exempt(blueprint)
    app.register_error_handler(CSRFError, refused_form)
