"""Catalog items over HTTP: submit rows for ingestion, follow the jobs, read and delete items.

Contract (every body is JSON; errors have the shape of :mod:`search.errors`):

``POST /items`` — body: one catalog row object or an array of at most :data:`MAX_ROWS` of them,
with the fields of a feed row (see :mod:`ingestion.feed`); ``Content-Type: application/json``.
Only ``http(s)`` ``image_url`` values are accepted from the network: a row with ``image_path``
or a ``file://`` URL is rejected like any invalid row, and workers fetch the images under
``row_fetch`` (ports 80 / 443, public addresses). Bad rows are reported and the others go on. The
job's ``created_by`` is the API key's name. Roles (:mod:`search.auth`): ``catalog`` for ``POST
/items``, ``GET /items/<sku>`` and ``GET /jobs/<id>``; ``admin`` for ``DELETE /items/<sku>``.

- 202 ``{"job_id": int | null, "queued": n, "metadata_updated": n, "unchanged": n, "errors": [...]}``
  with ``Location: /jobs/<job_id>`` when items were queued (``job_id`` null: nothing to embed);
  ``errors`` holds ``{"line": 1-based index, "sku": str | null, "reason": "field: why"}``.
- 400 ``invalid_json`` / ``invalid_body`` / ``empty`` / ``invalid_header``; 413 ``too_many_rows``
  (or a body over 10 MB); 415 ``unsupported_media_type``.
- 422 ``no_valid_rows`` when every row is invalid: the rows' problems are in the top-level ``errors``.
- 503 when the database, the vector store or the queue's broker is unavailable (retry as is).

``GET /jobs/<id>`` — 200 ``{"job_id", "total", "done", "failed", "embedded", "unchanged",
"remaining", "finished", "failures": [{"sku", "reason"}]}``; 404 for an unknown job.

``GET /items/<sku>`` — 200 with the item's metadata and ingestion status (``price`` is a decimal
*string* such as ``"19.90"``, exact, or null; times are ISO 8601 UTC); 404 for an unknown sku.

``GET /items/<sku>/image`` — the item's thumbnail (``image/jpeg``, at most
``pipeline.thumbnail_size`` pixels a side, kept by ingestion; ``ETag`` / ``Cache-Control``), under
the same rule as ``/similar`` (public while ``api.public_search``, else the ``search`` role); 404
for an unknown sku or an item ingested before thumbnails were kept.

``DELETE /items/<sku>`` — 204; the item, its crops and its vectors are gone. 404 if unknown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, jsonify, make_response, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from db.api_keys import Role
from db.indexing import delete_item
from db.models import Item
from db.thumbnails import thumbnail_of
from ingestion.feed import CatalogRow, parse_records
from search.api_limits import MAX_ROWS
from search.api_services import ApiServices
from search.auth import check_role, requires
from search.errors import ApiError
from search.item_view import item_view
from workers.submit import job_progress, submit_rows

MAX_DB_ID = 2**31 - 1  # ids are 32-bit INTEGER columns: larger ones cannot exist

items = Blueprint("items", __name__)


# -- typed requests and the service functions behind the views --------------------------------------


@dataclass(frozen=True)
class RowError:
    """A rejected row: ``line`` is its 1-based position in the request."""

    line: int
    sku: str | None
    reason: str


@dataclass(frozen=True)
class ItemsSubmission:
    """A validated ``POST /items`` request: the accepted rows and the rejected ones."""

    rows: list[CatalogRow]
    errors: list[RowError]
    created_by: str


@dataclass(frozen=True)
class SubmissionOutcome:
    job_id: int | None
    queued: int
    metadata_updated: int
    unchanged: int
    errors: list[RowError] = field(default_factory=list)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _network_source_problem(record: object) -> str | None:
    """Why a raw record's image source is refused from the network (local files), or None."""
    if not isinstance(record, Mapping):
        return None
    for key, value in record.items():
        name = key.strip().lower() if isinstance(key, str) else None
        given = value is not None and not (isinstance(value, str) and not value.strip())
        if name == "image_path" and given:
            return "image_path: local paths are not accepted by the API; give an http(s) image_url"
        if (
            name == "image_url"
            and isinstance(value, str)
            and urlsplit(value.strip()).scheme.lower() == "file"
        ):
            return "image_url: file URLs are not accepted by the API; give an http(s) URL"
    return None


def parse_submission(body: bytes, created_by: str) -> ItemsSubmission:
    """Validate a ``POST /items`` body into rows and row errors; raise :class:`ApiError` if unusable."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list):
        raise ApiError(400, "invalid_body", "expected a catalog row object or an array of them")
    if not data:
        raise ApiError(400, "empty", "the array holds no rows")
    if len(data) > MAX_ROWS:
        message = f"at most {MAX_ROWS} rows per request, got {len(data)}: split the submission"
        raise ApiError(413, "too_many_rows", message)
    refused = {
        line: problem for line, record in enumerate(data, 1) if (problem := _network_source_problem(record))
    }
    parsed = parse_records(data, max_errors=MAX_ROWS)
    errors = [
        RowError(e.line, e.sku, f"{refused[e.line]}; {e.reason}" if e.line in refused else e.reason)
        for e in parsed.errors
    ]
    rows: list[CatalogRow] = []
    for line, row in parsed.rows:
        if line in refused:
            errors.append(RowError(line, row.sku, refused[line]))
        else:
            rows.append(row)
    errors.sort(key=lambda e: e.line)
    return ItemsSubmission(rows=rows, errors=errors, created_by=created_by)


def submit_items(api: ApiServices, submission: ItemsSubmission) -> SubmissionOutcome:
    """Upsert the rows, open a job for those that need the models and get it processed."""
    if not submission.rows:
        raise ApiError(
            422,
            "no_valid_rows",
            f"all {len(submission.errors)} rows are invalid",
            extra={"errors": [asdict(e) for e in submission.errors]},
        )
    result = submit_rows(
        api.services.database,
        api.services.store,
        submission.rows,
        source="api",
        created_by=submission.created_by,
        trusted=False,
    )
    if result.job_id is not None:
        api.dispatch(result.queued, result.job_id)
    return SubmissionOutcome(
        job_id=result.job_id,
        queued=len(result.queued),
        metadata_updated=len(result.metadata_updated),
        unchanged=len(result.unchanged),
        errors=submission.errors,
    )


def find_item(api: ApiServices, sku: str) -> dict[str, Any]:
    """The item ``sku`` as :func:`item_view`; 404 if unknown."""
    with api.services.database.session() as session:
        item = session.scalar(select(Item).where(Item.sku == sku))
        if item is None:
            raise ApiError(404, "not_found", f"no item with sku {sku!r}")
        return item_view(item, internal=True)


def remove_item(api: ApiServices, sku: str) -> None:
    """Delete the item ``sku``, its crops and its vectors; 404 if unknown."""
    process = api.services
    with process.database.session() as session:
        if not delete_item(session, process.store, sku):
            raise ApiError(404, "not_found", f"no item with sku {sku!r}")


def job_view(api: ApiServices, job_id: int) -> dict[str, Any]:
    """A job's progress; 404 if unknown."""
    progress = job_progress(api.services.database, job_id) if job_id <= MAX_DB_ID else None
    if progress is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    return {
        "job_id": progress.job_id,
        "total": progress.total,
        "done": progress.done,
        "failed": progress.failed,
        "embedded": progress.embedded,
        "unchanged": progress.unchanged,
        "remaining": progress.remaining,
        "finished": progress.finished,
        "failures": [{"sku": sku, "reason": reason} for sku, reason in progress.failures],
    }


# -- views ---------------------------------------------------------------------------------------------


def _services() -> ApiServices:
    return ApiServices.of(current_app)


def _row_errors(errors: Sequence[RowError]) -> list[dict[str, Any]]:
    return [asdict(error) for error in errors]


@items.post("/items")
def post_items() -> ResponseReturnValue:
    """Submit catalog rows (catalog role); 202 with the job that ingests the ones needing the models."""
    principal = check_role(Role.CATALOG)
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send the rows as JSON (Content-Type: application/json)"
        )
    submission = parse_submission(request.get_data(cache=False), principal.name or principal.key_id)
    outcome = submit_items(_services(), submission)
    body = {
        "job_id": outcome.job_id,
        "queued": outcome.queued,
        "metadata_updated": outcome.metadata_updated,
        "unchanged": outcome.unchanged,
        "errors": _row_errors(outcome.errors),
    }
    headers = {}
    if outcome.job_id is not None:
        headers["Location"] = url_for("items.get_job", job_id=outcome.job_id)
    return jsonify(body), 202, headers


@items.get("/jobs/<int:job_id>")
@requires(Role.CATALOG)
def get_job(job_id: int) -> ResponseReturnValue:
    """An ingestion job's progress and failures."""
    return jsonify(job_view(_services(), job_id))


@items.get("/items/<path:sku>")
@requires(Role.CATALOG)
def get_item(sku: str) -> ResponseReturnValue:
    """One item's metadata and ingestion status."""
    return jsonify(find_item(_services(), sku))


@items.get("/items/<path:sku>/image")
@requires(Role.SEARCH, public=lambda settings: settings.public_search)
def get_item_image(sku: str) -> ResponseReturnValue:
    """An item's thumbnail (JPEG)."""
    with _services().services.database.session() as session:
        found = thumbnail_of(session, sku)
        if found is None:
            raise ApiError(404, "not_found", f"no image of item {sku!r}")
        body, etag = found.jpeg, found.content_hash or str(found.item_id)
    response = make_response(body)
    response.headers["Content-Type"] = "image/jpeg"
    response.set_etag(etag)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response.make_conditional(request)


@items.delete("/items/<path:sku>")
@requires(Role.ADMIN)
def delete_item_view(sku: str) -> ResponseReturnValue:
    """Remove an item and its vectors."""
    remove_item(_services(), sku)
    return "", 204
