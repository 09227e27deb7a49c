"""A small threaded HTTP server on 127.0.0.1 for tests (ephemeral port, no network).

Usage::

    from http_server import LocalHTTPServer, Response

    with LocalHTTPServer() as server:
        server.add("/a.jpg", Response(body=jpeg_bytes, content_type="image/jpeg"))
        server.redirect("/old", "/a.jpg")
        server.add("/custom", lambda handler: handler.send_error(418))  # full control
        url = server.url("/a.jpg")
        ...
        assert server.requests[-1].headers["User-Agent"] == "..."

Unknown paths answer 404. A route is a :class:`Response` or a callable taking the
:class:`http.server.BaseHTTPRequestHandler` (which then writes the whole response itself).
"""

from __future__ import annotations

import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


@dataclass
class Response:
    """A canned response. ``chunked`` uses Transfer-Encoding: chunked; ``content_length=False``
    omits the length and ends the body by closing the connection. ``delay_s`` sleeps after each
    ``chunk_size`` bytes (a slow, trickling server)."""

    body: bytes = b""
    status: int = 200
    content_type: str | None = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    content_length: bool = True
    chunk_size: int = 64 * 1024
    delay_s: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]


Route = Response | Callable[[BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.owner.requests.append(
            RecordedRequest(self.command, self.path, dict(self.headers.items()))
        )
        route = self.server.owner.routes.get(self.path.split("?", 1)[0])
        self.close_connection = True
        try:
            if route is None:
                self._write(Response(b"not found", status=404, content_type="text/plain"))
            elif isinstance(route, Response):
                self._write(route)
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client gave up: expected in timeout and size-limit tests

    do_HEAD = do_GET

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif response.content_length:
            self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        body = response.body
        for start in range(0, len(body), max(1, response.chunk_size)):
            piece = body[start : start + max(1, response.chunk_size)]
            if response.chunked:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            self.wfile.flush()
            if response.delay_s and self.server.owner.stopping.wait(response.delay_s):
                return
        if response.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LocalHTTPServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # failed TLS handshakes and dropped clients are expected in tests


class BackgroundServer:
    """A socketserver-based server on ``host`` at an ephemeral port, run in a daemon thread.

    Subclasses build the server in :meth:`_make_server`; ``stop()`` (or leaving the ``with``
    block) shuts it down and joins the thread.
    """

    thread_name = "test-server"

    def __init__(self, host: str) -> None:
        self.host = host
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self) -> socketserver.BaseServer:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.server_address[1]

    def start(self) -> Self:
        self._server = self._make_server()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalHTTPServer(BackgroundServer):
    """A threaded HTTP server bound to ``host`` (default 127.0.0.1) on an ephemeral port.

    With ``ssl_context`` (a server-side context with a certificate loaded) it serves HTTPS.
    """

    thread_name = "test-http-server"

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(host)
        self.ssl_context = ssl_context
        self.routes: dict[str, Route] = {}
        self.requests: list[RecordedRequest] = []
        self.stopping = threading.Event()

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"

    @property
    def base_url(self) -> str:
        return self.url("")

    def url(self, path: str, host: str | None = None) -> str:
        """The URL of ``path`` on this server; ``host`` replaces the host (e.g. 'localhost')."""
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def add(self, path: str, route: Route) -> str:
        """Serve ``route`` at ``path``; return its URL."""
        self.routes[path] = route
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Redirect ``path`` to ``location`` (absolute or relative); return the URL of ``path``."""
        return self.add(path, Response(status=status, content_type=None, headers={"Location": location}))

    def _make_server(self) -> _Server:
        server = _Server((self.host, 0), _Handler)
        server.owner = self
        if self.ssl_context is not None:  # handshake in the handler thread, not the accept loop
            server.socket = self.ssl_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        return server

    def stop(self) -> None:
        self.stopping.set()  # slow handlers stop waiting
        super().stop()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
