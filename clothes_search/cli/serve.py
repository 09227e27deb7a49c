"""``clothes-search serve``: the API under gunicorn (models warmed per worker), or Flask's server."""

from __future__ import annotations

import logging
from typing import Any

import click
from flask import Flask
from PIL import Image

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.settings import Settings

log = logging.getLogger(__name__)


def warm_app(app: Flask) -> None:
    """Load this process's models and open its connections before it takes traffic; from then on follow
    the index versions (the live version's models, and those of a version about to go live)."""
    from search.api_services import ApiServices

    api = ApiServices.of(app)
    services = api.services
    services.pipeline.load()
    services.pipeline.analyse([Image.new("RGB", (64, 64), "white")])  # first-call allocations
    with services.database.session():
        pass
    store = services.store
    store.list_collections()  # connects (and takes Milvus Lite's file lock) now, not mid-request
    live = store.resolve_alias(store.settings.live_alias)
    if live is not None:
        store.load(live)  # a reopened Milvus Lite file starts with its collections released
    api.watch_versions()


def build_app(settings: Settings) -> Flask:
    from search.app import create_app

    return create_app(settings)


class _Gunicorn:
    """A gunicorn application whose workers each build and warm their own app after the fork."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        from gunicorn.app.base import BaseApplication

        parent = self

        class Application(BaseApplication):
            def load_config(self) -> None:
                for key, value in options.items():
                    self.cfg.set(key, value)

            def load(self) -> Flask:  # called in each worker (preload_app is off)
                app = build_app(parent.settings)
                warm_app(app)
                parent.app = app
                return app

        def worker_exit(_server: object, _worker: object) -> None:
            """In the worker that stops: finish accepted in-process ingestion, withdraw its report."""
            from search.api_services import ApiServices

            if parent.app is not None:
                ApiServices.of(parent.app).close()

        self.settings = settings
        self.app: Flask | None = None  # this worker's, after the fork
        options.setdefault("worker_exit", worker_exit)
        self.application = Application()

    def run(self) -> None:
        self.application.run()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", "-w", default=1, show_default=True, help="gunicorn worker processes.")
@click.option("--timeout", default=120, show_default=True, help="Seconds before a stuck worker restarts.")
@click.option("--dev", is_flag=True, help="Flask's development server (one process, reloads nothing).")
@pass_cli
def serve(cli: CliContext, host: str, port: int, workers: int, timeout: int, dev: bool) -> None:
    """Serve the HTTP API (/similar, /items, /jobs, /healthz, /readyz, /metrics, /openapi.json)."""
    settings = cli.settings
    if dev:
        app = build_app(settings)
        warm_app(app)
        click.echo(f"serving on http://{host}:{port} (development server)")
        app.run(host=host, port=port, threaded=True)
        return
    if workers > 1 and not settings.milvus.uri.startswith(("http://", "https://")):
        raise click.ClickException(
            f"Milvus Lite at {settings.milvus.uri} serves one process: use --workers 1, or run "
            "`clothes-search milvus serve` and set CLOTHES_SEARCH_MILVUS__URI=http://127.0.0.1:19530"
        )
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "timeout": timeout,
        "graceful_timeout": 30,
        "preload_app": False,  # each worker loads its own models after the fork
        "accesslog": "-",
        "worker_class": "gthread",
        "threads": 4,
    }
    click.echo(f"serving on http://{host}:{port} with {workers} gunicorn workers")
    _Gunicorn(settings, options).run()
