"""The API's errors and the one place where every error becomes a JSON response.

Every error answer has the body ``{"error": {"code": str, "message": str, "parameter": str | null}}``
(an :class:`ApiError` may add top-level keys, e.g. the rejected rows of ``POST /items``).

Mapping, most specific first:

- :class:`ApiError` -> its own status and code;
- :class:`~db.filters.InvalidFilterError` -> 400, ``parameter`` names the parameter;
- :class:`~db.session.DatabaseUnavailableError`, :class:`~db.vectors.VectorStoreUnavailableError`,
  :class:`QueueUnavailableError` -> 503 with ``Retry-After`` (the client may retry the request as is);
- image errors of a query: refused URL -> 400 (``image_url``), too large -> 413, not an image ->
  415, fetch failed -> 502, fetch timed out -> 504; no garment in the image -> 422; no live
  index (or one built with other models) -> 503;
- other server-side project errors (database, vector store, models) -> 500 with their ``kind``;
- any other :class:`~clothes_search.errors.ClothesSearchError` -> 400 with its ``kind``;
- werkzeug :class:`~werkzeug.exceptions.HTTPException` (404, 405, 413...) -> its status, as JSON;
- anything else -> 500 ``internal``, logged with its traceback; no details reach the client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from clothes_search.errors import ClothesSearchError
from db.filters import InvalidFilterError
from db.session import DatabaseError, DatabaseUnavailableError
from db.vectors import VectorStoreError, VectorStoreUnavailableError
from ingestion.errors import (
    ImageDecodeError,
    ImageFetchError,
    ImageFetchTimeoutError,
    ImageNotFoundError,
    ImageTooLargeError,
    ModelError,
    UnsafeURLError,
)
from search.query_stages import IndexNotReadyError, NoGarmentFoundError
from workers.dispatch import QueueUnavailableError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
_UNAVAILABLE = (DatabaseUnavailableError, VectorStoreUnavailableError)
_SERVER_SIDE = (DatabaseError, VectorStoreError, ModelError)  # our failures, not the client's


class ApiError(ClothesSearchError):
    """A request the API refuses: ``status`` and ``code`` go to the client with ``message``.

    ``parameter`` names the offending input (a field, query parameter or header), ``extra`` adds
    top-level keys to the error body.
    """

    kind = "api_error"

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        parameter: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    parameter: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """The JSON error body every error answer uses."""
    body: dict[str, Any] = {"error": {"code": code, "message": message, "parameter": parameter}}
    body.update(extra or {})
    response = jsonify(body)
    response.status_code = status
    return response


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _api_error(exc: ApiError) -> Response:
    response = error_response(exc.status, exc.code, exc.message, parameter=exc.parameter, extra=exc.extra)
    response.headers.update(exc.headers)
    return response


#: image errors of a query: status, the parameter named, and the message the client gets. The error's
#: own message (addresses, remote answers, first bytes, setting names) goes to the log only: an
#: answer must not turn the server into a probe of other hosts (a DNS oracle, a port scanner).
_IMAGE_STATUS: tuple[tuple[type[ClothesSearchError], int, str | None, str], ...] = (
    (
        UnsafeURLError,
        400,
        "image_url",
        "the image URL is not allowed: give a public http(s) address (ports 80 and 443)",
    ),
    (ImageNotFoundError, 400, "image_url", "the image was not found"),
    (ImageTooLargeError, 413, None, "the image is too large (bytes or pixels)"),
    (ImageDecodeError, 415, None, "not a supported image (JPEG, PNG, GIF, WebP, BMP, TIFF) or a damaged one"),
    (ImageFetchTimeoutError, 504, "image_url", "the image's server did not answer in time"),
    (ImageFetchError, 502, "image_url", "the image could not be fetched"),
)


def _project_error(exc: ClothesSearchError) -> Response:
    if isinstance(exc, InvalidFilterError):
        return error_response(400, exc.kind, str(exc), parameter=exc.parameter)
    for cls, status, parameter, message in _IMAGE_STATUS:
        if isinstance(exc, cls):
            log.info("answering %d for an image: %s: %s", status, exc.kind, exc)
            if isinstance(exc, ImageFetchError) and not isinstance(exc, UnsafeURLError) and exc.status:
                message = f"{message} (HTTP {exc.status})"
            return error_response(status, exc.kind, message, parameter=parameter)
    if isinstance(exc, NoGarmentFoundError):
        return error_response(422, exc.kind, str(exc))
    if isinstance(exc, IndexNotReadyError):
        response = error_response(503, exc.kind, str(exc))
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    if isinstance(exc, (*_UNAVAILABLE, QueueUnavailableError)):
        log.warning("answering 503: %s: %s", exc.kind, exc)
        what = {
            DatabaseUnavailableError: "the database",
            VectorStoreUnavailableError: "the vector store",
            QueueUnavailableError: "the ingestion queue",
        }
        name = next((label for cls, label in what.items() if isinstance(exc, cls)), "a backend")
        response = error_response(503, exc.kind, f"{name} is unavailable; retry later")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    if isinstance(exc, _SERVER_SIDE):
        log.error("answering 500: %s", exc.kind, exc_info=exc)
        return error_response(500, exc.kind, "internal error")
    return error_response(400, exc.kind, str(exc))


def _http_error(exc: HTTPException) -> HTTPException | Response:
    if exc.code is None:  # not an error status (e.g. a proxied response): let werkzeug answer
        return exc
    response = error_response(exc.code, _snake(exc.name), exc.description or exc.name)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # e.g. Allow on 405
    return response


def _unexpected(exc: Exception) -> Response:
    log.error("unhandled error answering a request", exc_info=exc)
    return error_response(500, "internal", "internal error")


def register_error_handlers(app: Flask) -> None:
    """Answer every error of ``app`` with the JSON body of :func:`error_response`."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ClothesSearchError, _project_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
