"""One connection to Milvus (embedded Milvus Lite on a ``.db`` path, or a server by URI): the plumbing
of :class:`db.vectors.VectorStore`.

It connects lazily on first use, checks the version of what answers (Milvus ≥ 2.3 or Milvus Lite ≥ 3;
anything older is refused with a message), wraps every pymilvus / gRPC error into
:class:`VectorStoreError`, or :class:`VectorStoreUnavailableError` when the server cannot be reached
(refused, timed out): the API answers 503, the queue retries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from pymilvus import MilvusClient
from pymilvus.exceptions import (
    ConnectError,
    ConnectionConfigException,
    MilvusException,
    MilvusUnavailableException,
)

from clothes_search.settings import MilvusSettings
from db.vector_records import T, VectorStoreError, VectorStoreUnavailableError
from db.vector_schema import ServerInfo

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 900.0  # load and flush: loading builds missing segment indexes
_CONNECT_FAILED = 2  # pymilvus Status.CONNECT_FAILED
_NOT_LOADED = 101  # Milvus ErrCollectionNotLoaded
_SERVE_HINT = (
    "check that the server runs (`clothes-search milvus serve` starts a local one) "
    "and that CLOTHES_SEARCH_MILVUS__URI points to it"
)


# Milvus Lite runs in-process: one embedded server per .db path, shared by the path's clients and
# kept until exit. Stores count their uses so that the last close() stops it (freeing the file lock).
_LITE_LOCK = threading.Lock()
_LITE_USERS: dict[str, int] = {}


def _lite_release(path: str) -> None:
    with _LITE_LOCK:
        _LITE_USERS[path] = _LITE_USERS.get(path, 0) - 1
        if _LITE_USERS[path] > 0:
            return
        del _LITE_USERS[path]
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(path)


def _unavailable_reason(exc: BaseException) -> str | None:
    """ "timeout" or "unavailable" when the server did not answer in time or cannot be reached."""
    code = getattr(exc, "code", None)
    if isinstance(exc, grpc.RpcError):
        code = code() if callable(code) else None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if isinstance(exc, MilvusUnavailableException | ConnectError) or code == grpc.StatusCode.UNAVAILABLE:
        return "unavailable"
    if isinstance(exc, MilvusException) and code == _CONNECT_FAILED and "connect" in _message(exc).lower():
        return "unavailable"
    return None


def _message(exc: BaseException) -> str:
    return str(exc.message) if isinstance(exc, MilvusException) else str(exc) or type(exc).__name__


class MilvusConnection:
    """A lazily opened, thread-safe :class:`MilvusClient` and the error handling of every call."""

    def __init__(self, settings: MilvusSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._milvus: MilvusClient | None = None
        self._lite_path: str | None = None
        self._server: ServerInfo | None = None

    @property
    def uri(self) -> str:
        """The configured URI, without credentials."""
        parts = urlsplit(self.settings.uri)
        if parts.scheme and "@" in parts.netloc:
            return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[1]}{parts.path}"
        return self.settings.uri

    @property
    def is_local(self) -> bool:
        """True for an embedded Milvus Lite file (usable by one process at a time)."""
        return "://" not in self.settings.uri and not self.settings.uri.startswith("unix:")

    @property
    def server(self) -> ServerInfo:
        """What answers: Milvus Lite or a server, and its version (connects on first use)."""
        self.client()
        assert self._server is not None
        return self._server

    def close(self) -> None:
        """Close the connection (and stop this process' Milvus Lite when no other store uses it)."""
        with self._lock:
            client, self._milvus = self._milvus, None
            lite_path, self._lite_path = self._lite_path, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing must not fail
                log.debug("closing the Milvus client failed", exc_info=True)
        if lite_path is not None:
            _lite_release(lite_path)

    def client(self) -> MilvusClient:
        with self._lock:
            if self._milvus is None:
                client = self._connect()
                try:
                    self._server = self._check_version(client)
                except BaseException:
                    self._close_unchecked(client)
                    raise
                self._milvus = client
            return self._milvus

    def _close_unchecked(self, client: MilvusClient) -> None:
        try:
            client.close()
        finally:
            if self._lite_path is not None:
                _lite_release(self._lite_path)
                self._lite_path = None

    def _check_version(self, client: MilvusClient) -> ServerInfo:
        text = self.call("asking the server version", lambda: client.get_server_version())
        info = ServerInfo.parse(str(text))
        log.info("Milvus at %s answers: %s", self.uri, info.text)
        info.check_supported()
        return info

    def _connect(self) -> MilvusClient:
        s = self.settings
        if not self.is_local:
            return self.call(
                "connecting", lambda: MilvusClient(s.uri, token=s.token or "", timeout=s.timeout_s)
            )
        path = Path(s.uri).expanduser().absolute()
        if path.suffix != ".db":
            raise VectorStoreError(
                f"Milvus Lite needs a path ending in .db, got {s.uri!r} (or http://host:port)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # Embedded Milvus Lite serves gRPC inside this process and logs every call it does not
        # implement (pymilvus asks it for timestamps, then falls back): keep that out of our logs.
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
        with _LITE_LOCK:
            _LITE_USERS[str(path)] = _LITE_USERS.get(str(path), 0) + 1
        try:
            client = MilvusClient(str(path), timeout=s.timeout_s)
        except ConnectionConfigException as exc:
            _lite_release(str(path))
            raise VectorStoreError(
                f"cannot open Milvus Lite at {path}: {_message(exc)}. It allows one process per file: is "
                "another process using it? For several processes run `clothes-search milvus serve` and set "
                "CLOTHES_SEARCH_MILVUS__URI=http://127.0.0.1:19530"
            ) from exc
        except (MilvusException, grpc.RpcError) as exc:
            _lite_release(str(path))
            raise self.wrap(exc, "opening Milvus Lite") from exc
        self._lite_path = str(path)
        return client

    def wrap(self, exc: BaseException, action: str, timeout_s: float | None = None) -> VectorStoreError:
        reason = _unavailable_reason(exc)
        if reason == "timeout":
            limit = timeout_s or self.settings.timeout_s
            return VectorStoreUnavailableError(
                f"Milvus at {self.uri} did not finish {action} within {limit:g} s: {_message(exc)}; it may "
                "be down or overloaded (CLOTHES_SEARCH_MILVUS__TIMEOUT_S sets the limit)"
            )
        if reason == "unavailable":
            message = f"Milvus at {self.uri} is unavailable ({action}): {_message(exc)}; {_SERVE_HINT}"
            return VectorStoreUnavailableError(message)
        return VectorStoreError(f"Milvus at {self.uri}: {action} failed: {_message(exc)}")

    def call(self, action: str, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        try:
            return fn()
        except (MilvusException, grpc.RpcError) as exc:
            raise self.wrap(exc, action, timeout_s) from exc

    def rpc(self, action: str, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """``client.method(*args, **kwargs)`` with a timeout (default: the settings'), errors wrapped."""
        client = self.client()
        timeout = timeout_s or self.settings.timeout_s
        return self.call(action, lambda: getattr(client, method)(*args, timeout=timeout, **kwargs), timeout)

    def read(self, collection: str, action: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """A read RPC. A released collection (e.g. after a restart) is loaded and the read retried once,
        unless ``milvus.load_on_read`` is off (the API): then it is unavailable (503), not a request
        that waits minutes for a load."""
        client = self.client()
        try:
            return getattr(client, method)(*args, timeout=self.settings.timeout_s, **kwargs)
        except MilvusException as exc:
            if exc.code != _NOT_LOADED:
                raise self.wrap(exc, action) from exc
        except grpc.RpcError as exc:
            raise self.wrap(exc, action) from exc
        if not self.settings.load_on_read:
            raise VectorStoreUnavailableError(f"collection {collection!r} is not loaded ({action})")
        self.load(collection)
        return self.rpc(action, method, *args, **kwargs)

    def load(self, collection: str, timeout_s: float | None = None) -> None:
        """Load the collection; the default timeout is at least :data:`LOAD_TIMEOUT_S` (loading builds
        the index of segments that lack one: minutes for a large collection)."""
        timeout = timeout_s or max(self.settings.timeout_s, LOAD_TIMEOUT_S)
        self.rpc(f"loading {collection!r}", "load_collection", collection, timeout_s=timeout)
