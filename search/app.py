"""The HTTP API's application factory.

Run it with ``clothes-search serve`` (gunicorn, models warmed per worker), ``flask --app
search.app:create_app run`` (development) or any WSGI server, e.g. ``gunicorn -w 2
'search.app:create_app()'`` (the settings then come from the environment and the config file
that ``CLOTHES_SEARCH_CONFIG`` names). No application object is created at import, and
:func:`create_app` connects to nothing and loads no model (see :mod:`search.api_services`).
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue

from clothes_search.settings import Settings
from search.api_limits import MAX_CONTENT_LENGTH
from search.api_services import ApiServices
from search.errors import register_error_handlers
from search.items_api import items
from search.metrics import init_metrics
from search.ops_api import ops
from search.similar_api import similar

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness: the process answers HTTP (checks no backend; readiness is another probe)."""
    return jsonify(status="ok")


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API application; ``settings`` default to :meth:`Settings.load` (environment, config)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    ApiServices(settings if settings is not None else Settings.load()).init_app(app)
    register_error_handlers(app)
    init_metrics(app)
    app.register_blueprint(health)
    app.register_blueprint(items)
    app.register_blueprint(similar)
    app.register_blueprint(ops)
    return app
