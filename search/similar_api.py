"""``GET /similar?image_url=…`` and ``POST /similar`` (multipart ``image`` file or a raw image body).

Parameters (query string for both): ``k`` (default ``search.default_k``, at most
``search.max_k``); filters ``category`` and ``brand`` (repeatable), ``price_min``,
``price_max``, ``in_stock`` (true/false), ``attr.<name>=<value>``; ``garment`` (``all``,
``largest`` or a box ``x1,y1,x2,y2`` in pixels); ``rerank`` (``none`` | ``k_reciprocal``);
``qe`` (true/false). Yes/no values take the words of :mod:`clothes_search.booleans`, as feeds
do. Unknown parameters are refused, so a typo never silently drops a filter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from clothes_search.booleans import DESCRIPTION as BOOLEAN_WORDS
from clothes_search.booleans import parse_boolean
from clothes_search.settings import ApiSettings, FetchSettings, SearchSettings
from db.api_keys import Role
from db.filters import CatalogFilter
from ingestion.detection import Box
from ingestion.images import LoadedImage, decode_image, load_image
from search.api_services import ApiServices
from search.auth import may, requires
from search.errors import ApiError
from search.item_view import item_view
from search.metrics import observe_similar_stages
from search.query_stages import GarmentChoice
from search.similar import SimilarQuery, SimilarResult, search_similar

similar = Blueprint("similar", __name__)

PARAMETERS = {
    *("image_url", "k", "category", "brand", "price_min", "price_max", "in_stock", "garment", "rerank", "qe"),
}


def _bad(parameter: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{parameter}: {message}", parameter=parameter)


def _boolean(args: MultiDict[str, str], name: str) -> bool | None:
    raw = args.get(name)
    if raw is None:
        return None
    value = parse_boolean(raw)
    if value is None:
        raise _bad(name, f"expected {BOOLEAN_WORDS}, got {raw!r}")
    return value


def _number(args: MultiDict[str, str], name: str) -> float | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, f"expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise _bad(name, "must be finite")
    return value


def _garment(raw: str | None) -> GarmentChoice:
    if raw is None or raw == "all":
        return "all"
    if raw == "largest":
        return "largest"
    parts = raw.split(",")
    try:
        x1, y1, x2, y2 = (float(p) for p in parts)
    except ValueError:
        raise _bad("garment", f"expected 'all', 'largest' or 'x1,y1,x2,y2', got {raw!r}") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        raise _bad("garment", "the box needs finite x1 < x2 and y1 < y2 (pixels)")
    return Box(x1, y1, x2, y2)


def parse_query(args: MultiDict[str, str], settings: SearchSettings) -> SimilarQuery:
    """Validate the query string into a :class:`SimilarQuery` (400 naming the parameter otherwise)."""
    for name in args:
        if name not in PARAMETERS and not name.startswith("attr."):
            raise _bad(name, f"unknown parameter (known: {', '.join(sorted(PARAMETERS))}, attr.<name>)")
    raw_k = args.get("k", str(settings.default_k))
    if not (raw_k.isascii() and raw_k.isdigit()) or not 1 <= int(raw_k) <= settings.max_k:
        raise _bad("k", f"expected an integer from 1 to {settings.max_k}, got {raw_k!r}")
    rerank = args.get("rerank", settings.rerank)
    if rerank not in ("none", "k_reciprocal"):
        raise _bad("rerank", f"expected 'none' or 'k_reciprocal', got {rerank!r}")
    qe = _boolean(args, "qe")
    attributes: dict[str, str] = {}
    for name in args:
        if name.startswith("attr."):
            attributes[name.removeprefix("attr.")] = args[name]
    catalog_filter = CatalogFilter(
        categories=tuple(args.getlist("category")),
        brands=tuple(args.getlist("brand")),
        price_min=_number(args, "price_min"),
        price_max=_number(args, "price_max"),
        in_stock=_boolean(args, "in_stock"),
        attributes=attributes,
    )
    return SimilarQuery(
        k=int(raw_k),
        filter=catalog_filter,
        garment=_garment(args.get("garment")),
        rerank=rerank,  # type: ignore[arg-type]  # checked above
        query_expansion=settings.query_expansion if qe is None else qe,
    )


def _answer(result: SimilarResult, timings: dict[str, float]) -> ResponseReturnValue:
    internal = may(Role.CATALOG)  # ingestion details for the catalog's people only
    garments: list[dict[str, Any]] = []
    for found in result.garments:
        garments.append(
            {
                "box": found.garment.box.as_list(),
                "category": found.garment.category,
                "score": round(found.garment.score, 4),
                "alternatives": [
                    {"category": category, "score": round(score, 4)}
                    for category, score in found.garment.alternatives
                ],
                "detectors": list(found.garment.detectors),
                "results": [
                    {
                        "rank": rank,
                        "sku": match.sku,
                        "score": round(match.score, 6),
                        "crop": {
                            "box": [round(v, 1) for v in match.crop_box],
                            "category": match.crop_category,
                        },
                        "item": item_view(match.item, internal=internal),
                    }
                    for rank, match in enumerate(found.matches, start=1)
                ],
            }
        )
    observe_similar_stages(timings)
    timings_ms = {stage: round(ms, 1) for stage, ms in timings.items()}
    response = jsonify(signature=result.signature, timings_ms=timings_ms, garments=garments)
    response.headers["Server-Timing"] = ", ".join(f"{stage};dur={ms}" for stage, ms in timings_ms.items())
    return response


def _query() -> SimilarQuery:
    return parse_query(request.args, ApiServices.of(current_app).settings.search)


def _search(
    query: SimilarQuery, stage: str, load: Callable[[FetchSettings], LoadedImage]
) -> ResponseReturnValue:
    """Obtain the image (timed as ``stage``) under the query fetch policy, search, answer; at most
    ``api.max_concurrent_searches`` at once in this process (503 beyond)."""
    api = ApiServices.of(current_app)
    with api.limits.search_slot():
        timings: dict[str, float] = {}
        start = time.perf_counter()
        loaded = load(api.settings.query_fetch)
        timings[stage] = (time.perf_counter() - start) * 1000
        result = search_similar(api.services, loaded.image, query, timings, scale=loaded.scale)
    return _answer(result, timings)


def _public_search(settings: ApiSettings) -> bool:
    return settings.public_search


@similar.get("/similar")
@requires(Role.SEARCH, public=_public_search)
def get_similar() -> ResponseReturnValue:
    query = _query()
    url = request.args.get("image_url")
    if not url:
        raise _bad("image_url", "required (or POST the image)")
    return _search(query, "fetch", lambda fetch: load_image(url, fetch, allow_local_files=False))


@similar.post("/similar")
@requires(Role.SEARCH, public=_public_search)
def post_similar() -> ResponseReturnValue:
    query = _query()
    upload = request.files.get("image")
    data = upload.read() if upload is not None else request.get_data(cache=False)
    if not data:
        message = "send the image as multipart field 'image' or as the request body"
        raise ApiError(400, "missing_image", message, parameter="image")
    return _search(query, "decode", lambda fetch: decode_image(data, fetch, source="<upload>"))
