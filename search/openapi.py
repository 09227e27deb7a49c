"""The API's OpenAPI 3.0.3 document, written by hand to match the views (served at ``/openapi.json``).

Keep it in step with :mod:`search.items_api`, :mod:`search.similar_api` and :mod:`search.ops_api`:
``tests/test_ops_api.py`` checks that it is valid and lists every route of the app. The limits of
``k`` come from the server's search settings.
"""

from __future__ import annotations

import copy
from typing import Any

from clothes_search.booleans import DESCRIPTION as BOOLEAN_WORDS
from clothes_search.settings import SearchSettings
from search.api_limits import MAX_CONTENT_LENGTH, MAX_ROWS

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"
_REF = "#/components/"

_DESCRIPTION = f"""Visual search for fashion catalogs.

Every error answer has the JSON body `ErrorBody`: `{{"error": {{"code", "message", "parameter"}}}}`.
A path answers **405** (with an `Allow` header) to a method it does not list (HEAD and OPTIONS are
answered for every GET path), an unknown path answers **404**, and a request body over
{MAX_CONTENT_LENGTH // (1024 * 1024)} MiB answers **413**, all with that body. **503** answers carry
`Retry-After`: retry the request as is."""


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"{_REF}{kind}/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ref("responses", f"E{status}") for status in statuses}


def _string(max_length: int | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **extra}
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _all_required(**properties: Any) -> dict[str, Any]:
    return _object(list(properties), **properties)


def _get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    """A path item with one GET operation and no parameters."""
    return {"get": {"operationId": operation_id, "summary": summary, "responses": responses}}


_NULLABLE_STRING = {"type": "string", "nullable": True}
_INTEGER = {"type": "integer", "minimum": 0}
_ATTRIBUTE_VALUE = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
_BOX = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_CHECK = {**_STRING, "description": "`ok` or `failed: <kind>`."}

_SCHEMAS: dict[str, Any] = {
    "ErrorBody": _all_required(
        error=_all_required(
            code={**_STRING, "description": "Machine-readable, e.g. `invalid_parameter`."},
            message=_STRING,
            parameter={**_NULLABLE_STRING, "description": "The offending input, if any."},
        )
    ),
    "RowError": _all_required(
        line={"type": "integer", "minimum": 1, "description": "1-based position in the request."},
        sku=_NULLABLE_STRING,
        reason={**_STRING, "description": "`field: why`."},
    ),
    "RowsRejected": {
        "allOf": [
            _ref("schemas", "ErrorBody"),
            _all_required(errors={"type": "array", "items": _ref("schemas", "RowError")}),
        ]
    },
    "CatalogRow": {
        **_object(
            ["sku", "image_url"],
            sku={"oneOf": [_string(128, minLength=1), {"type": "integer"}]},
            image_url=_string(2048, format="uri", description="An http(s) URL."),
            title=_string(512),
            category=_string(64),
            brand=_string(128),
            price={
                "oneOf": [
                    {"type": "number", "minimum": 0, "maximum": 9999999999.99},
                    _string(pattern=r"^[0-9]+(\.[0-9]{1,2})?$"),
                ],
                "description": "At most 2 decimals; `currency` is required with a price.",
            },
            currency=_string(pattern="^[A-Za-z]{3}$", description="ISO 4217, e.g. `EUR`."),
            color=_string(64),
            sizes={
                "oneOf": [{"type": "array", "items": _string(32), "maxItems": 100}, _STRING],
                "description": "A list, or a `|`-separated string.",
            },
            in_stock={"oneOf": [{"type": "boolean"}, _STRING, {"type": "integer"}], "default": True},
            attributes={"type": "object", "additionalProperties": _ATTRIBUTE_VALUE, "maxProperties": 50},
        ),
        "description": "A catalog item. Keys other than the listed fields become free attributes "
        "(`[A-Za-z_][A-Za-z0-9_]{0,63}`); `null` or blank values mean 'not given'. `image_path` and "
        "`file://` URLs are refused by the API.",
        "additionalProperties": True,
    },
    "SubmissionAccepted": _all_required(
        job_id={"type": "integer", "nullable": True, "description": "null: nothing to embed."},
        queued=_INTEGER,
        metadata_updated=_INTEGER,
        unchanged=_INTEGER,
        errors={"type": "array", "items": _ref("schemas", "RowError")},
    ),
    "Job": _all_required(
        **dict.fromkeys(["job_id", "total", "done", "failed", "embedded", "unchanged"], _INTEGER),
        remaining=_INTEGER,
        finished={"type": "boolean"},
        failures={"type": "array", "items": _all_required(sku=_STRING, reason=_STRING)},
    ),
    "Item": _object(
        [
            "sku",
            "title",
            "category",
            "brand",
            "price",
            "currency",
            "color",
            "sizes",
            "in_stock",
            "attributes",
            "image_url",
            "image",
        ],
        sku=_STRING,
        title=_STRING,
        category=_STRING,
        brand=_STRING,
        price={**_NULLABLE_STRING, "pattern": r"^[0-9]+\.[0-9]{2}$", "description": "Exact decimal."},
        currency=_NULLABLE_STRING,
        color=_NULLABLE_STRING,
        sizes=_STRINGS,
        in_stock={"type": "boolean"},
        attributes={"type": "object", "additionalProperties": _ATTRIBUTE_VALUE},
        image_url={
            **_NULLABLE_STRING,
            "description": "Public views: only a public http(s) URL. With the catalog role: the source.",
        },
        image={
            **_all_required(url=_STRING, width=_INTEGER, height=_INTEGER),
            "nullable": True,
            "description": "The thumbnail the platform serves (`GET /items/{sku}/image`) and the size of "
            "the ingested image, whose pixels crop boxes are in; null for items ingested before.",
        },
        status={"type": "string", "enum": ["pending", "processing", "indexed", "failed"]},
        last_error=_NULLABLE_STRING,
        attempts=_INTEGER,
        last_job_id={"type": "integer", "nullable": True},
        indexed_at={**_NULLABLE_STRING, "format": "date-time"},
        updated_at={**_NULLABLE_STRING, "format": "date-time"},
    ),
    "Facets": _all_required(
        total=_INTEGER,
        category={"type": "array", "items": _ref("schemas", "FacetValue")},
        brand={"type": "array", "items": _ref("schemas", "FacetValue")},
        price=_all_required(min=_NULLABLE_STRING, max=_NULLABLE_STRING, items_with_price=_INTEGER),
        in_stock=_all_required(true=_INTEGER, false=_INTEGER),
        attributes={
            "type": "object",
            "additionalProperties": {"type": "array", "items": _ref("schemas", "FacetValue")},
        },
    ),
    "FacetValue": _all_required(value=_ATTRIBUTE_VALUE, count=_INTEGER),
    "SimilarResult": _all_required(
        rank={"type": "integer", "minimum": 1},
        sku=_STRING,
        score={"type": "number", "description": "Higher is more similar."},
        crop=_all_required(box=_BOX, category=_STRING),
        item=_ref("schemas", "Item"),
    ),
    "SimilarAnswer": _all_required(
        signature={**_STRING, "description": "The models' signature hash."},
        timings_ms={
            "type": "object",
            "additionalProperties": {"type": "number"},
            "description": "Per stage: fetch or decode, detect, embed, ann, rerank, db.",
        },
        garments={
            "type": "array",
            "items": _all_required(
                box=_BOX,
                category=_STRING,
                score={"type": "number"},
                alternatives={
                    "type": "array",
                    "description": "The garment's other class hypotheses (same box), highest score first.",
                    "items": _all_required(category=_STRING, score={"type": "number"}),
                },
                detectors=_STRINGS,
                results={"type": "array", "items": _ref("schemas", "SimilarResult")},
            ),
        },
    ),
    "Readiness": _object(
        ["status", "checks"],
        status={"type": "string", "enum": ["ready", "not_ready"]},
        checks=_all_required(
            database=_CHECK,
            vector_store=_CHECK,
            models=_CHECK,
            index={
                **_STRING,
                "description": "The live collection, `none`, `unknown` (database down) or `failed: <why>`.",
            },
        ),
        failing={**_STRINGS, "description": "The failing checks (only when 503)."},
    ),
}

_ERROR_RESPONSES = {
    400: "Invalid request: `parameter` names the input.",
    401: "No valid API key (missing, unknown, revoked or malformed): `Authorization: Bearer <key>`.",
    403: "The API key lacks the role this needs.",
    404: "Not found.",
    413: "Too large: the request body, the number of rows or the image.",
    415: "Unsupported media type: not JSON (items) or not a decodable image (similar).",
    422: "Well-formed but unusable: no garment found in the image.",
    500: "Internal error (logged with its traceback; no details are given).",
    502: "The image could not be fetched from `image_url`.",
    503: "A backend (database, vector store, queue) is unavailable, or there is no live index "
    "built with this server's models: retry later.",
    429: "Too many requests from this key (or address): wait `Retry-After` seconds.",
    504: "Fetching `image_url` timed out.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}


def _responses() -> dict[str, Any]:
    responses = {
        f"E{status}": _json(_ref("schemas", "ErrorBody"), description)
        for status, description in _ERROR_RESPONSES.items()
    }
    responses["E503"]["headers"] = _RETRY_AFTER
    responses["E429"]["headers"] = _RETRY_AFTER
    return responses


_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key: `cs_<id>_<secret>`."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _keyed(operation: dict[str, Any], role: str, *, optional: bool = False) -> dict[str, Any]:
    """``operation`` needing an API key with ``role`` (or none at all when ``optional``)."""
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    note = f" Needs an API key with the `{role}` role (`admin` holds every role)."
    if optional:
        security = [{}, *security]
        note = f" Public, or with the `{role}` role when the server makes it private."
    responses = {**operation["responses"], **_errors(401, 429), **({} if optional else _errors(403))}
    description = operation.get("description", operation["summary"]) + note
    return {**operation, "description": description, "security": security, "responses": responses}


def _similar_parameters(search: SearchSettings) -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "in": "query", "schema": schema, "description": description, **extra}

    def repeated(name: str) -> dict[str, Any]:
        schema = {"type": "array", "items": {"type": "string"}}
        return query(name, schema, f"Keep items of any of these {name} values.", style="form", explode=True)

    return [
        query(
            "k",
            {"type": "integer", "minimum": 1, "maximum": search.max_k, "default": search.default_k},
            "Results per garment.",
        ),
        repeated("category"),
        repeated("brand"),
        query("price_min", {"type": "number"}, "Lowest price (items without a price never match)."),
        query("price_max", {"type": "number"}, "Highest price."),
        query("in_stock", {"type": "boolean"}, f"Stock filter; accepts {BOOLEAN_WORDS}."),
        query(
            "garment",
            {"type": "string", "default": "all"},
            "`all` (every detected garment), `largest`, or a box `x1,y1,x2,y2` in pixels (x1 < x2, y1 < y2).",
        ),
        query(
            "rerank",
            {"type": "string", "enum": ["none", "k_reciprocal"], "default": search.rerank},
            "Re-ranking of the candidates.",
        ),
        query(
            "qe",
            {"type": "boolean", "default": search.query_expansion},
            f"Average query expansion; accepts {BOOLEAN_WORDS}.",
        ),
    ]


_SIMILAR_DESCRIPTION = (
    "Attribute filters are free-form query parameters `attr.<name>=<value>` (e.g. `attr.fit=slim`), "
    "not listed here. Any other unknown parameter answers 400."
)
_SIMILAR_OK = _json(
    _ref("schemas", "SimilarAnswer"),
    "Per garment of the query image, its best catalog matches.",
    headers={"Server-Timing": {"description": "The stage timings.", "schema": {"type": "string"}}},
)
_ROWS = {"type": "array", "items": _ref("schemas", "CatalogRow"), "minItems": 1, "maxItems": MAX_ROWS}
_SKU = {
    "name": "sku",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "The item's sku (it may contain `/`).",
}


def _paths(search: SearchSettings) -> dict[str, Any]:
    similar_parameters = _similar_parameters(search)
    image_url = {
        "name": "image_url",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "format": "uri"},
        "description": "The query image: an http(s) URL the server may fetch.",
    }
    binary = {"type": "string", "format": "binary"}
    text = {"schema": _STRING}
    paths = {
        "/similar": {
            "get": {
                "operationId": "similarByUrl",
                "summary": "Catalog items similar to the garments of an image at a URL.",
                "description": _SIMILAR_DESCRIPTION,
                "parameters": [image_url, *similar_parameters],
                "responses": {"200": _SIMILAR_OK, **_errors(400, 413, 415, 422, 500, 502, 503, 504)},
            },
            "post": {
                "operationId": "similarByUpload",
                "summary": "Catalog items similar to the garments of an uploaded image.",
                "description": _SIMILAR_DESCRIPTION
                + " The image is the multipart field `image` or the raw request body.",
                "parameters": similar_parameters,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": _object(["image"], image=binary)},
                        "image/*": {"schema": binary},
                        "application/octet-stream": {"schema": binary},
                    },
                },
                "responses": {"200": _SIMILAR_OK, **_errors(400, 413, 415, 422, 500, 503)},
            },
        },
        "/items": {
            "post": {
                "operationId": "submitItems",
                "summary": "Submit catalog rows for ingestion.",
                "description": f"One row or an array of at most {MAX_ROWS}. Bad rows are reported in "
                "`errors`, the others go on.",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"oneOf": [_ref("schemas", "CatalogRow"), _ROWS]}}},
                },
                "responses": {
                    "202": _json(
                        _ref("schemas", "SubmissionAccepted"),
                        "Accepted; the job processes the rows that need the models.",
                        headers={
                            "Location": {"description": "`/jobs/<job_id>`", "schema": {"type": "string"}}
                        },
                    ),
                    **_errors(400, 413, 415),
                    "422": _json(_ref("schemas", "RowsRejected"), "Every row is invalid."),
                    **_errors(500, 503),
                },
            }
        },
        "/jobs/{job_id}": {
            "get": {
                "operationId": "getJob",
                "summary": "An ingestion job's progress and failures.",
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": _INTEGER}],
                "responses": {"200": _json(_ref("schemas", "Job"), "The job."), **_errors(404, 500, 503)},
            }
        },
        "/items/{sku}": {
            "get": {
                "operationId": "getItem",
                "summary": "One item's metadata and ingestion status.",
                "parameters": [_SKU],
                "responses": {"200": _json(_ref("schemas", "Item"), "The item."), **_errors(404, 500, 503)},
            },
            "delete": {
                "operationId": "deleteItem",
                "summary": "Delete an item, its crops and its vectors.",
                "parameters": [_SKU],
                "responses": {"204": {"description": "Deleted."}, **_errors(404, 500, 503)},
            },
        },
        "/items/{sku}/image": {
            "get": {
                "operationId": "getItemImage",
                "summary": "The item's thumbnail (JPEG, at most pipeline.thumbnail_size pixels a side).",
                "parameters": [_SKU],
                "responses": {
                    "200": {"description": "The thumbnail.", "content": {"image/jpeg": {"schema": binary}}},
                    "304": {"description": "Not modified (If-None-Match)."},
                    **_errors(404, 500, 503),
                },
            }
        },
        "/facets": _get(
            "facets",
            "Filterable values of the catalog (category, brand, price range, stock, attributes) with "
            "item counts.",
            {"200": _json(_ref("schemas", "Facets"), "The facets."), **_errors(500, 503)},
        ),
        "/healthz": _get(
            "healthz",
            "Liveness: the process answers (checks no backend).",
            {"200": _json(_all_required(status=_STRING), "Alive.")},
        ),
        "/readyz": _get(
            "readyz",
            "Readiness: the backends and the models answer (the first call loads the models).",
            {
                "200": _json(_ref("schemas", "Readiness"), "Ready."),
                "503": _json(_ref("schemas", "Readiness"), "Not ready: `failing` names the checks.")
                | {"headers": _RETRY_AFTER},
            },
        ),
        "/metrics": _get(
            "metrics",
            "Prometheus metrics (OpenMetrics when the Accept header asks for it).",
            {
                "200": {
                    "description": "The metrics in the Prometheus text format.",
                    "content": {"text/plain": text, "application/openmetrics-text": text},
                }
            },
        ),
        "/openapi.json": _get(
            "openapi", "This document.", {"200": _json({"type": "object"}, "The OpenAPI document.")}
        ),
    }
    for method in ("get", "post"):
        paths["/similar"][method] = _keyed(paths["/similar"][method], "search", optional=True)
    paths["/items"]["post"] = _keyed(paths["/items"]["post"], "catalog")
    paths["/jobs/{job_id}"]["get"] = _keyed(paths["/jobs/{job_id}"]["get"], "catalog")
    paths["/items/{sku}"]["get"] = _keyed(paths["/items/{sku}"]["get"], "catalog")
    paths["/items/{sku}"]["delete"] = _keyed(paths["/items/{sku}"]["delete"], "admin")
    paths["/metrics"]["get"] = _keyed(paths["/metrics"]["get"], "admin", optional=True)
    paths["/items/{sku}/image"]["get"] = _keyed(paths["/items/{sku}/image"]["get"], "search", optional=True)
    paths["/facets"]["get"] = _keyed(paths["/facets"]["get"], "search", optional=True)
    return paths


def openapi_document(search: SearchSettings) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the API served with these search settings."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "clothes-search", "version": "0.1.0", "description": _DESCRIPTION},
        "paths": _paths(search),
        "components": {
            "schemas": copy.deepcopy(_SCHEMAS),
            "responses": _responses(),
            "securitySchemes": copy.deepcopy(_SECURITY_SCHEMES),
        },
    }
