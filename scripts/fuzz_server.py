"""A throw-away embedded API for ``scripts/fuzz.sh``: index a few images, serve, count the answers.

In ``--root``: a migrated SQLite file, a Milvus Lite file and light models (the whole image,
EfficientNet-Lite0). Three generated product images are served by a local HTTP server and ingested
in-process through ``POST /items``; then the API is served on a free port of 127.0.0.1, whose number
is written to ``--ready-file``. Besides the app's routes, ``/_fuzz/openapi.json`` serves the app's
document with ``image_url`` of ``GET /similar`` narrowed to the served images, so that a fuzzer
reaches real searches. Every answer is counted; on SIGTERM or SIGINT the server stops and writes
``--summary`` (JSON: requests, statuses, and method, path and query of each 500).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from werkzeug.serving import make_server

from clothes_search.settings import Settings
from db import migrate
from db.api_keys import new_key_text
from search.api_services import ApiServices
from search.app import create_app
from search.openapi import openapi_document

log = logging.getLogger("fuzz_server")

LIGHT_MODELS: dict[str, Any] = {
    "detectors": [{"name": "whole", "backend": "whole_image"}],
    "embedders": [{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}],
}
COLOURS = [(200, 30, 30), (30, 150, 40), (30, 60, 200)]
FUZZ_SCHEMA_PATH = "/_fuzz/openapi.json"
INGEST_TIMEOUT_S = 300.0
CLOSE_TIMEOUT_S = 10.0

StartResponse = Callable[..., Any]


def product_jpeg(colour: tuple[int, int, int]) -> bytes:
    """A catalog-style JPEG: a T-shirt shape on white."""
    image = Image.new("RGB", (160, 200), "white")
    w, h = image.size
    outline = [(0.3, 0.15), (0.7, 0.15), (0.95, 0.35), (0.75, 0.4), (0.75, 0.9), (0.25, 0.9), (0.25, 0.4)]
    ImageDraw.Draw(image).polygon([(w * x, h * y) for x, y in [*outline, (0.05, 0.35)]], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def serve_images(images: dict[str, bytes]) -> ThreadingHTTPServer:
    """Serve ``images`` (path -> JPEG) on 127.0.0.1 at an ephemeral port, in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = images.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="images", daemon=True).start()
    return server


class Recorder:
    """WSGI middleware: counts answers by status, keeps the 500s, serves the fuzzing schema."""

    def __init__(self, app: Callable[..., Iterable[bytes]], fuzz_schema: dict[str, Any]) -> None:
        self.app = app
        self.fuzz_schema = json.dumps(fuzz_schema).encode()
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.server_errors: list[dict[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == FUZZ_SCHEMA_PATH:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [self.fuzz_schema]

        def recording_start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            code = int(status.split(" ", 1)[0])
            with self.lock:
                self.statuses[code] += 1
                if code == 500:
                    self.server_errors.append(
                        {
                            "method": environ.get("REQUEST_METHOD", ""),
                            "path": environ.get("PATH_INFO", ""),
                            "query": environ.get("QUERY_STRING", "")[:500],
                            "content_type": environ.get("CONTENT_TYPE", ""),
                        }
                    )
            return start_response(status, headers, *args)

        return self.app(environ, recording_start)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": sum(self.statuses.values()),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "server_errors": list(self.server_errors),
            }


def fuzz_schema(settings: Settings, image_urls: list[str]) -> dict[str, Any]:
    """The app's document with GET /similar's ``image_url`` limited to ``image_urls``."""
    document = copy.deepcopy(openapi_document(settings.search))
    for parameter in document["paths"]["/similar"]["get"]["parameters"]:
        if parameter["name"] == "image_url":
            parameter["schema"] = {"type": "string", "enum": image_urls}
    return document


def ingest(app: Any, rows: list[dict[str, Any]]) -> None:
    """Submit ``rows`` through the app and wait for their job to finish (every row indexed)."""
    key = ApiServices.of(app).settings.api.bootstrap_admin_key
    assert key is not None
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key.get_secret_value()}"
    reply = client.post("/items", json=rows)
    if reply.status_code != 202:
        raise RuntimeError(f"POST /items answered {reply.status_code}: {reply.get_data(as_text=True)}")
    deadline = time.monotonic() + INGEST_TIMEOUT_S
    while not (job := client.get(reply.headers["Location"]).get_json())["finished"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingestion did not finish in {INGEST_TIMEOUT_S:g} s: {job}")
        time.sleep(0.2)
    if job["done"] != len(rows):
        raise RuntimeError(f"ingestion failed: {job}")


def close_services(app: Any) -> bool:
    """Close the app's services; False if queued ingestion did not drain within CLOSE_TIMEOUT_S."""
    closer = threading.Thread(target=ApiServices.of(app).close, name="close", daemon=True)
    closer.start()
    closer.join(CLOSE_TIMEOUT_S)
    return not closer.is_alive()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="empty directory for the database files")
    parser.add_argument("--ready-file", type=Path, required=True, help="gets the port once serving")
    parser.add_argument("--summary", type=Path, required=True, help="JSON counts written on exit")
    parser.add_argument("--key-file", type=Path, required=True, help="gets the admin API key")
    parser.add_argument("--models-dir", type=Path, help="default: the settings' (the per-user folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    images = {f"/product-{n}.jpg": product_jpeg(colour) for n, colour in enumerate(COLOURS)}
    image_server = serve_images(images)
    base = f"http://127.0.0.1:{image_server.server_address[1]}"
    models = {"models_dir": args.models_dir.absolute()} if args.models_dir else {}
    local = {
        "allowed_networks": ["127.0.0.1/32"],
        "allowed_ports": [],
        "total_timeout_s": 10,
        "read_timeout_s": 5,
    }
    key = new_key_text()
    settings = Settings.load(
        **models,
        database={"url": f"sqlite:///{args.root.absolute() / 'catalog.db'}"},
        milvus={"uri": str(args.root.absolute() / "m.db"), "index_type": "FLAT"},
        fetch=local,
        row_fetch=local,
        query_fetch=local,
        # an admin key for the fuzzer (every operation is reached past its role check), and limits
        # high enough for its burst of requests
        api={
            "bootstrap_admin_key": key,
            "rate_limit": "1000000/minute",
            "search_rate_limit": "1000000/minute",
        },
        **LIGHT_MODELS,
    )
    args.key_file.write_text(key)
    migrate.upgrade(settings.database)
    app = create_app(settings)
    rows = [{"sku": f"fuzz-{n}", "image_url": base + path, "brand": "acme"} for n, path in enumerate(images)]
    ingest(app, rows)
    log.info("indexed %d items", len(rows))

    recorder = Recorder(app.wsgi_app, fuzz_schema(settings, [base + path for path in images]))
    app.wsgi_app = recorder  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    serving.start()
    args.ready_file.write_text(str(server.server_port))
    log.info("serving on http://127.0.0.1:%d", server.server_port)
    stop.wait()
    server.shutdown()
    serving.join(10)
    args.summary.write_text(json.dumps(recorder.summary(), indent=2))
    image_server.shutdown()
    if not close_services(app):
        # fuzzed rows (unreachable image URLs, retried with back-off) are still queued: drop them
        log.warning("ingestion still busy after %g s: exiting without draining it", CLOSE_TIMEOUT_S)
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
