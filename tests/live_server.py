"""Call the Flask API over real HTTP on 127.0.0.1 in tests: served in-thread, or by ``clothes-search serve``.

Usage::

    from live_server import LiveServer, ServeProcess, clothes_search_env

    with LiveServer(create_app(settings)) as server:  # in this process
        reply = server.call("POST", "/items", json={"sku": "a", ...})
        assert reply.status == 202, reply.body
        assert reply.json["job_id"] == 1
        assert reply.headers["Location"] == "/jobs/1"

    env = clothes_search_env(database={"url": "sqlite:///..."}, milvus={"uri": "..."})
    with ServeProcess(env, cwd=REPO_ROOT, log_path=tmp_path / "serve.log") as server:  # gunicorn
        assert server.call("GET", "/healthz").status == 200

:class:`LiveServer` is werkzeug's threaded ``make_server`` on an ephemeral port, run in a daemon
thread; ``stop()`` (or leaving the ``with`` block) shuts it down and joins the thread.
:class:`ServeProcess` runs ``clothes-search serve`` (gunicorn) in its own process group on a free
port, configured only by the environment it is given. Both are :class:`HttpClient`\\ s: requests go
through :mod:`http.client`, one connection per call, and never raise on an error status.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from http_server import BackgroundServer
from werkzeug.serving import BaseWSGIServer, make_server

from clothes_search.settings import ENV_PREFIX

CLI = Path(sys.executable).with_name("clothes-search")
AUTH_HEADERS = {"authorization", "x-api-key"}
#: an admin key the servers of the tests create at start-up (api.bootstrap_admin_key)
TEST_ADMIN_KEY = "cs_testadmin2_" + "A" * 43
#: fetch sections that let a server fetch from the tests' own HTTP servers (127.0.0.1, any port)
LOCAL_FETCH = {"allowed_networks": ["127.0.0.1/32"], "allowed_ports": []}


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process may still take it before you bind)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def local_fetch(**fetch: Any) -> dict[str, Any]:
    """``fetch``, ``row_fetch`` and ``query_fetch`` open to 127.0.0.1 on any port, with ``fetch``'s limits."""
    section = {**LOCAL_FETCH, **fetch}
    return {"fetch": section, "row_fetch": section, "query_fetch": section}


def clothes_search_env(**settings: Any) -> dict[str, str]:
    """This process's environment without its ``CLOTHES_SEARCH_*`` variables, plus ``settings``.

    Each keyword is a top-level setting: a dict is a section whose keys become
    ``CLOTHES_SEARCH_SECTION__KEY`` variables; strings and paths are written as they are, any other
    value as JSON (lists, dicts, numbers, booleans), e.g.
    ``clothes_search_env(fetch={"max_bytes": 1000}, detectors=[...])``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}

    def text(value: Any) -> str:
        return str(value) if isinstance(value, str | Path) else jsonlib.dumps(value)

    for name, value in settings.items():
        if isinstance(value, dict):
            env.update({f"{ENV_PREFIX}{name}__{key}".upper(): text(v) for key, v in value.items()})
        else:
            env[f"{ENV_PREFIX}{name}".upper()] = text(value)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``clothes-search ARGS...`` to completion; its output captured as text."""
    return subprocess.run([str(CLI), *args], env=env, cwd=cwd, capture_output=True, text=True)


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


class HttpClient:
    """Requests to an HTTP server at ``host``:``port`` (provided by the class that mixes this in).

    ``api_key`` (when set) goes with every request as ``Authorization: Bearer``, unless the call's
    headers say otherwise.
    """

    host: str
    port: int
    api_key: str | None = None

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
        if self.api_key is not None and not any(h.lower() in AUTH_HEADERS for h in sent_headers):
            sent_headers["Authorization"] = f"Bearer {self.api_key}"
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


class LiveServer(HttpClient, BackgroundServer):
    """``app`` served on ``host`` at an ephemeral port in a background thread."""

    thread_name = "live-server"

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.app = app

    def _make_server(self) -> BaseWSGIServer:
        return make_server(self.host, 0, self.app, threaded=True)


@contextmanager
def served_api(app: Any) -> Iterator[LiveServer]:
    """Serve an app built by ``search.app.create_app``; afterwards stop it and close its services
    (which waits for in-process ingestion it accepted)."""
    from search.api_services import ApiServices

    server = LiveServer(app).start()
    key = ApiServices.of(app).settings.api.bootstrap_admin_key
    server.api_key = key.get_secret_value() if key is not None else None
    try:
        yield server
    finally:
        server.stop()
        ApiServices.of(app).close()


class ServeProcess(HttpClient):
    """``clothes-search serve`` (gunicorn, ``workers`` processes) on 127.0.0.1 at a free port.

    Entering starts it in a new process group, its output appended to ``log_path``, and waits
    until ``GET /healthz`` answers 200 (its workers have loaded and warmed their models); the test
    fails with the log's tail if it exits or is not ready in ``ready_timeout_s``. Leaving sends
    SIGTERM to the group and waits for it (SIGKILL after ``stop_timeout_s``).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        workers: int = 1,
        ready_timeout_s: float = 180.0,
        stop_timeout_s: float = 60.0,
    ) -> None:
        self.env, self.cwd, self.log_path, self.workers = env, cwd, log_path, workers
        self.api_key = env.get(f"{ENV_PREFIX}API__BOOTSTRAP_ADMIN_KEY")
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def log_tail(self, chars: int = 3000, since: int = 0) -> str:
        """The end of the log (of what it gained after byte ``since``)."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[since:].decode(errors="replace")[-chars:]

    def start(self) -> Self:
        for _attempt in range(3):  # the free port may be taken between probing and binding
            self.port = free_port(self.host)
            command = self.command()
            with self.log_path.open("ab") as log:
                logged = log.tell()
                self._process = subprocess.Popen(
                    command, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            try:
                if self._wait_ready():
                    return self
            except BaseException:
                self.stop()
                raise
            self.stop()
            if "Connection in use" not in self.log_tail(since=logged):  # gunicorn's words
                break
        pytest.fail(f"clothes-search serve did not start:\n{self.log_tail()}", pytrace=False)

    def command(self) -> list[str]:
        """The server's command line for ``self.port``."""
        return [str(CLI), "serve", "--port", str(self.port), "--workers", str(self.workers)]

    def _wait_ready(self) -> bool:
        """True once /healthz answers 200; False if the process exits first; fails at the deadline."""
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while self._process.poll() is None:
            try:
                if self.call("GET", "/healthz", timeout_s=5).status == 200:
                    return True
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(
                    f"clothes-search serve not ready after {self.ready_timeout_s:.0f}s:\n{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        """SIGTERM to the whole process group (gunicorn's master and workers); SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        with suppress(ProcessLookupError):  # the group is gone already
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class GunicornProcess(ServeProcess):
    """Plain ``gunicorn 'search.app:create_app()'``, as :mod:`search.app` says to run it, configured
    only by its environment (``CLOTHES_SEARCH_CONFIG`` and ``CLOTHES_SEARCH_*``)."""

    def command(self) -> list[str]:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        return [
            str(gunicorn),
            "-b",
            f"{self.host}:{self.port}",
            "-w",
            str(self.workers),
            "search.app:create_app()",
        ]


def wait_for_job(api: HttpClient, location: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll a job until it finishes; its final state."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = api.call("GET", location)
        assert reply.status == 200, reply.body
        if reply.json["finished"]:
            return reply.json
        assert time.monotonic() < deadline, f"job not finished after {timeout_s}s: {reply.json}"
        time.sleep(0.1)


def ingest_rows(api: HttpClient, rows: list[dict[str, Any]], timeout_s: float = 120.0) -> dict[str, Any]:
    """POST catalog rows, wait for their job, check every row was indexed; the job's final state."""
    reply = api.call("POST", "/items", json=rows)
    assert reply.status == 202, reply.body
    job = wait_for_job(api, reply.header("Location"), timeout_s)
    assert job["done"] == len(rows), job
    return job
