"""Serve a WSGI app (the Flask API) over real HTTP on 127.0.0.1 for tests, and call it.

Usage::

    from live_server import LiveServer

    with LiveServer(create_app(settings)) as server:
        reply = server.call("POST", "/items", json={"sku": "a", ...})
        assert reply.status == 202, reply.body
        assert reply.json["job_id"] == 1
        assert reply.headers["Location"] == "/jobs/1"

The server is werkzeug's threaded ``make_server`` on an ephemeral port, run in a daemon thread;
``stop()`` (or leaving the ``with`` block) shuts it down and joins the thread. Requests go
through :mod:`http.client`, one connection per call, and never raise on an error status.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from http_server import BackgroundServer
from werkzeug.serving import BaseWSGIServer, make_server


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: ``headers`` keeps the last value of each (case-insensitive) name."""

    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def json(self) -> Any:
        """The body parsed as JSON (fails the test with the body if it is not JSON)."""
        content_type = self.header("Content-Type") or ""
        assert content_type.startswith("application/json"), (
            f"{self.status} {content_type}: {self.body[:300]!r}"
        )
        return jsonlib.loads(self.body)


class LiveServer(BackgroundServer):
    """``app`` served on ``host`` at an ephemeral port in a background thread."""

    thread_name = "live-server"

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.app = app

    def _make_server(self) -> BaseWSGIServer:
        return make_server(self.host, 0, self.app, threaded=True)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> Reply:
        """Send one request; ``json`` is encoded with ``Content-Type: application/json``."""
        sent_headers = dict(headers or {})
        if json is not None:
            data = jsonlib.dumps(json).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        try:
            connection.request(method, path, body=data, headers=sent_headers)
            response = connection.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()


@contextmanager
def served_api(app: Any) -> Iterator[LiveServer]:
    """Serve an app built by ``search.app.create_app``; afterwards stop it and close its services
    (which waits for in-process ingestion it accepted)."""
    from search.app import ApiServices

    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()
        ApiServices.of(app).close()


def wait_for_job(api: LiveServer, location: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll a job until it finishes; its final state."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = api.call("GET", location)
        assert reply.status == 200, reply.body
        if reply.json["finished"]:
            return reply.json
        assert time.monotonic() < deadline, f"job not finished after {timeout_s}s: {reply.json}"
        time.sleep(0.1)


def ingest_rows(api: LiveServer, rows: list[dict[str, Any]], timeout_s: float = 120.0) -> dict[str, Any]:
    """POST catalog rows, wait for their job, check every row was indexed; the job's final state."""
    reply = api.call("POST", "/items", json=rows)
    assert reply.status == 202, reply.body
    job = wait_for_job(api, reply.header("Location"), timeout_s)
    assert job["done"] == len(rows), job
    return job
