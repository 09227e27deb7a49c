"""The items API over real HTTP: submission, background ingestion, jobs, reads, deletes, errors.

The app is served by werkzeug on a socket; the database is a migrated SQLite file, the vectors go
to Milvus Lite, images come from a local HTTP server, and ingestion runs in-process with one
light embedder (EfficientNet-Lite0 on the whole image) to keep the models quick to load.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from http_server import LocalHTTPServer, Response
from live_server import TEST_ADMIN_KEY, LiveServer, local_fetch, wait_for_job
from sample_images import product_shot

from clothes_search.settings import Settings
from db import migrate
from search.api_limits import MAX_CONTENT_LENGTH, MAX_ROWS
from search.api_services import ApiServices
from search.app import create_app

REDIS_URL = os.environ.get("CLOTHES_SEARCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
LIGHT_MODELS: dict[str, Any] = {
    "embedders": [{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}],
    "detectors": [{"name": "whole", "backend": "whole_image"}],
}


def jpeg(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    product_shot(colour, size=(120, 160)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@pytest.fixture
def images() -> Iterator[LocalHTTPServer]:
    """Product shots over HTTP; ``/slow.jpg`` trickles in for about a second."""
    with LocalHTTPServer() as server:
        body = jpeg()
        server.add("/shirt.jpg", Response(body, content_type="image/jpeg"))
        server.add("/blue.jpg", Response(jpeg((30, 30, 200)), content_type="image/jpeg"))
        server.add(
            "/slow.jpg", Response(body, content_type="image/jpeg", chunk_size=len(body) // 4, delay_s=0.25)
        )
        yield server


@pytest.fixture
def api_settings(make_settings, tmp_path) -> Callable[..., Settings]:
    """Settings for an embedded API (SQLite file, Milvus Lite file, light models); overrides win."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
            "milvus": {"uri": str(tmp_path / "m.db"), "index_type": "FLAT"},
            **local_fetch(),
            "api": {"bootstrap_admin_key": TEST_ADMIN_KEY},
            **LIGHT_MODELS,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def api(api_settings, serve) -> LiveServer:
    """The API on a freshly migrated database, in-process ingestion."""
    settings = api_settings()
    migrate.upgrade(settings.database)
    return serve(create_app(settings))


def row(sku: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"sku": sku, "image_url": url, "title": f"Shirt {sku}", "category": "top", **fields}


def assert_error(reply: Any, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    body = reply.json
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


def live_fields(api: LiveServer, sku: str) -> Any:
    """The filter fields Milvus holds for ``sku`` (None: no vectors)."""
    services = ApiServices.of(api.app)
    store = services.services.store
    collection = store.resolve_alias(services.settings.milvus.live_alias)
    assert collection is not None
    return store.item_fields(collection, [sku]).get(sku)


# -- ingestion ---------------------------------------------------------------------------------------


@pytest.mark.slow  # loads EfficientNet-Lite0
def test_a_posted_item_is_accepted_at_once_then_indexed(api, images):
    reply = api.call(
        "POST", "/items", json=row("sku-1", images.url("/slow.jpg"), price="19.9", currency="eur")
    )
    assert reply.status == 202, reply.body
    body = reply.json
    assert body == {
        "job_id": body["job_id"],
        "queued": 1,
        "metadata_updated": 0,
        "unchanged": 0,
        "errors": [],
    }
    assert isinstance(body["job_id"], int)
    assert reply.header("Location") == f"/jobs/{body['job_id']}"

    first = api.call("GET", reply.header("Location")).json  # the image alone takes over a second
    assert first["finished"] is False and first["remaining"] == 1

    job = wait_for_job(api, reply.header("Location"))
    assert job == {
        "job_id": body["job_id"],
        "total": 1,
        "done": 1,
        "failed": 0,
        "embedded": 1,
        "unchanged": 0,
        "remaining": 0,
        "finished": True,
        "failures": [],
    }
    item = api.call("GET", "/items/sku-1")
    assert item.status == 200, item.body
    assert item.json["status"] == "indexed"
    assert item.json["price"] == "19.90" and item.json["currency"] == "EUR"
    assert item.json["image_url"] == images.url("/slow.jpg")
    assert item.json["indexed_at"].endswith("+00:00")
    assert live_fields(api, "sku-1") is not None


@pytest.mark.slow  # loads EfficientNet-Lite0
def test_resubmitting_is_a_no_op_and_a_new_price_skips_the_models(api, images):
    first = api.call(
        "POST", "/items", json=[row("sku-1", images.url("/shirt.jpg"), price=10, currency="EUR")]
    )
    wait_for_job(api, first.header("Location"))

    again = api.call(
        "POST", "/items", json=[row("sku-1", images.url("/shirt.jpg"), price=10, currency="EUR")]
    )
    assert again.status == 202, again.body
    assert again.json == {"job_id": None, "queued": 0, "metadata_updated": 0, "unchanged": 1, "errors": []}
    assert again.header("Location") is None

    cheaper = api.call(
        "POST", "/items", json=row("sku-1", images.url("/shirt.jpg"), price=7.5, currency="EUR")
    )
    assert cheaper.status == 202, cheaper.body
    assert cheaper.json == {"job_id": None, "queued": 0, "metadata_updated": 1, "unchanged": 0, "errors": []}
    assert api.call("GET", "/items/sku-1").json["price"] == "7.50"
    assert live_fields(api, "sku-1").price == 7.5  # the vectors' copy follows, without re-embedding


@pytest.mark.slow  # loads EfficientNet-Lite0
def test_bad_rows_are_reported_by_line_and_field_and_the_good_ones_go_on(api, images):
    rows = [
        row("good", images.url("/shirt.jpg")),
        {"image_url": images.url("/blue.jpg")},
        {"sku": "local", "image_path": "/etc/passwd"},
        row("pricey", images.url("/blue.jpg"), price="12,50", currency="EUR"),
        row("file", "file:///etc/passwd"),
        {"sku": "both-bad", "image_path": "x.jpg", "price": "cheap"},
    ]
    reply = api.call("POST", "/items", json=rows)
    assert reply.status == 202, reply.body
    body = reply.json
    assert (body["queued"], body["metadata_updated"], body["unchanged"]) == (1, 0, 0)
    errors = {error["line"]: error for error in body["errors"]}
    assert sorted(errors) == [2, 3, 4, 5, 6]
    assert errors[2]["sku"] is None and errors[2]["reason"].startswith("sku: required")
    assert errors[3]["sku"] == "local" and errors[3]["reason"].startswith("image_path:")
    assert errors[4]["sku"] == "pricey" and errors[4]["reason"].startswith("price:")
    assert errors[5]["sku"] == "file" and errors[5]["reason"].startswith("image_url:")
    assert "image_path:" in errors[6]["reason"] and "price:" in errors[6]["reason"]

    job = wait_for_job(api, reply.header("Location"))
    assert (job["total"], job["done"], job["failed"]) == (1, 1, 0)
    for sku in ("local", "pricey", "file"):
        assert api.call("GET", f"/items/{sku}").status == 404


@pytest.mark.slow  # loads EfficientNet-Lite0
def test_an_image_that_is_not_found_fails_its_item_with_the_reason(api, images):
    reply = api.call("POST", "/items", json=[row("gone", images.url("/missing.jpg"))])
    assert reply.status == 202, reply.body
    job = wait_for_job(api, reply.header("Location"))
    assert (job["done"], job["failed"], job["remaining"]) == (0, 1, 0)
    [failure] = job["failures"]
    assert failure["sku"] == "gone" and "404" in failure["reason"]
    item = api.call("GET", "/items/gone").json
    assert item["status"] == "failed" and "404" in item["last_error"]


@pytest.mark.slow  # loads EfficientNet-Lite0
def test_deleting_an_item_removes_it_and_its_vectors(api, images):
    reply = api.call("POST", "/items", json=row("a/b 1", images.url("/shirt.jpg")))
    wait_for_job(api, reply.header("Location"))
    assert live_fields(api, "a/b 1") is not None

    deleted = api.call("DELETE", "/items/a/b%201")
    assert deleted.status == 204 and deleted.body == b""
    assert_error(api.call("GET", "/items/a/b%201"), 404, "not_found")
    assert_error(api.call("DELETE", "/items/a/b%201"), 404, "not_found")
    assert live_fields(api, "a/b 1") is None


def test_with_a_broker_the_batch_goes_to_the_queue(api_settings, serve, images):
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not running ({exc}); .ci/run starts it", pytrace=False)
    settings = api_settings(queue={"broker_url": REDIS_URL})
    migrate.upgrade(settings.database)
    api = serve(create_app(settings))
    try:
        reply = api.call("POST", "/items", json=[row("q1", images.url("/shirt.jpg"))])
        assert reply.status == 202, reply.body
        assert client.llen("ingest") == 1
        [task] = client.lrange("ingest", 0, -1)
        assert json.loads(task)["headers"]["argsrepr"] == repr([["q1"], reply.json["job_id"]])
        assert api.call("GET", "/items/q1").json["status"] == "pending"
    finally:
        client.flushdb()


# -- request errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"sku": "a", ', {}, 400, "invalid_json"),
        (b'{"sku": "a", "price": NaN}', {}, 400, "invalid_json"),
        (b'"just a string"', {}, 400, "invalid_body"),
        (b"[]", {}, 400, "empty"),
        (b'[{"sku": "a"}, 3]', {}, 422, "no_valid_rows"),
        (json.dumps([{"sku": str(i)} for i in range(MAX_ROWS + 1)]).encode(), {}, 413, "too_many_rows"),
        (b'{"sku": "a"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ],
    ids=["broken", "nan", "string", "empty", "all-invalid", "too-many", "not-json"],
)
def test_unusable_submissions_answer_json_errors(api, body, headers, status, code):
    sent = {"Content-Type": "application/json", **headers}
    reply = api.call("POST", "/items", data=body, headers=sent)
    error = assert_error(reply, status, code)
    if code == "no_valid_rows":
        assert [e["line"] for e in error["errors"]] == [1, 2]
    if code == "too_many_rows":
        assert str(MAX_ROWS) in error["error"]["message"]


def test_a_body_over_the_size_limit_answers_413(api):
    body = b"[" + b" " * MAX_CONTENT_LENGTH + b"]"
    reply = api.call("POST", "/items", data=body, headers={"Content-Type": "application/json"})
    assert_error(reply, 413, "request_entity_too_large")


def test_unknown_jobs_items_and_routes_answer_json_404(api):
    assert_error(api.call("GET", "/jobs/999999"), 404, "not_found")
    assert_error(api.call("GET", "/jobs/99999999999999999999999"), 404, "not_found")
    assert_error(api.call("GET", "/items/nope"), 404, "not_found")
    assert_error(api.call("GET", "/nowhere"), 404, "not_found")
    assert_error(api.call("GET", "/jobs/abc"), 404, "not_found")


def test_a_wrong_method_answers_json_405_with_allow(api):
    reply = api.call("PUT", "/items/sku-1")
    assert_error(reply, 405, "method_not_allowed")
    assert {"GET", "DELETE"} <= set(reply.header("Allow").replace(" ", "").split(","))
    assert_error(api.call("GET", "/items"), 405, "method_not_allowed")


def test_an_unreachable_database_answers_503_never_500(api_settings, serve, images):
    settings = api_settings(database={"url": "postgresql+psycopg2://nobody@127.0.0.1:1/x"})
    api = serve(create_app(settings))
    assert api.call("GET", "/healthz").json == {"status": "ok"}
    for method, path, payload in [
        ("GET", "/items/x", None),
        ("DELETE", "/items/x", None),
        ("GET", "/jobs/1", None),
        ("POST", "/items", row("x", images.url("/shirt.jpg"))),
    ]:
        reply = api.call(method, path, json=payload)
        body = assert_error(reply, 503, "database_unavailable")
        assert reply.header("Retry-After")
        assert "nobody" not in body["error"]["message"]  # no connection details leak


def test_an_unreachable_broker_answers_503_and_the_item_stays_pending(api_settings, serve, images):
    settings = api_settings(queue={"broker_url": "redis://127.0.0.1:1/0"})
    migrate.upgrade(settings.database)
    api = serve(create_app(settings))
    reply = api.call("POST", "/items", json=row("x", images.url("/shirt.jpg")))
    assert_error(reply, 503, "queue_unavailable")
    assert api.call("GET", "/items/x").json["status"] == "pending"


def test_an_unexpected_error_answers_500_without_details(api_settings, serve):
    settings = api_settings()
    migrate.upgrade(settings.database)
    app = create_app(settings)

    def broken() -> str:
        raise RuntimeError("secret internals")

    app.add_url_rule("/broken", view_func=broken)
    reply = serve(app).call("GET", "/broken")
    body = assert_error(reply, 500, "internal")
    assert body == {"error": {"code": "internal", "message": "internal error", "parameter": None}}


def test_thumbnails_and_facets_follow_what_was_ingested(api, images, api_settings):
    rows = [
        row("shirt", images.url("/shirt.jpg"), brand="acme", color="red", price=19.9, currency="EUR"),
        row("blue", images.url("/blue.jpg"), brand="zed", color="blue", in_stock=False),
    ]
    reply = api.call("POST", "/items", json=rows)
    assert reply.status == 202, reply.body
    assert wait_for_job(api, reply.header("Location"))["done"] == 2
    image = api.call("GET", "/items/shirt/image", headers={"Authorization": ""})  # public, like /similar
    assert image.status == 200 and image.header("Content-Type") == "image/jpeg"
    from PIL import Image as PilImage

    thumbnail = PilImage.open(io.BytesIO(image.body))
    assert max(thumbnail.size) <= 320 and thumbnail.size == (120, 160)  # small images stay as they are
    again = api.call("GET", "/items/shirt/image", headers={"If-None-Match": image.header("ETag")})
    assert again.status == 304
    assert api.call("GET", "/items/nothing/image").status == 404
    view = api.call("GET", "/items/shirt").json
    assert view["image"] == {"url": "/items/shirt/image", "width": 120, "height": 160}
    facets = api.call("GET", "/facets").json
    assert facets["total"] == 2
    assert {f["value"]: f["count"] for f in facets["brand"]} == {"acme": 1, "zed": 1}
    assert facets["in_stock"] == {"true": 1, "false": 1} and facets["price"]["min"] == "19.90"
    assert {f["value"] for f in facets["attributes"]["color"]} == {"red", "blue"}


def test_with_a_private_search_thumbnails_and_facets_need_the_search_role(api_settings, serve):
    settings = api_settings(api={"bootstrap_admin_key": TEST_ADMIN_KEY, "public_search": False})
    migrate.upgrade(settings.database)
    private = serve(create_app(settings))
    anonymous = {"Authorization": ""}
    assert private.call("GET", "/facets", headers=anonymous).status == 401
    assert private.call("GET", "/items/x/image", headers=anonymous).status == 401
    assert private.call("GET", "/facets").status == 200  # the admin key holds every role


def test_a_web_session_stands_for_its_key_on_reads_never_on_api_writes(api):
    import re

    anonymous = {"Authorization": ""}
    page = api.call("GET", "/login", headers=anonymous)
    assert "frame-ancestors 'none'" in page.header("Content-Security-Policy")  # never framed (clickjacking)
    cookie = page.header("Set-Cookie").split(";")[0]
    assert "HttpOnly" in page.header("Set-Cookie") and "SameSite=Lax" in page.header("Set-Cookie")
    token = re.search(rb'name="csrf-token" content="([^"]+)"', page.body).group(1).decode()
    form = f"csrf_token={token}&key={TEST_ADMIN_KEY}&next=/catalog".encode()
    signed_in = api.call(
        "POST", "/login", data=form,
        headers={**anonymous, "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert signed_in.status == 302 and signed_in.header("Location") == "/catalog"
    session = {**anonymous, "Cookie": signed_in.header("Set-Cookie").split(";")[0]}
    assert api.call("GET", "/catalog", headers=session).status == 200  # the admin page, signed in
    assert api.call("GET", "/jobs/1", headers=session).status == 404  # a read with the key's role
    assert api.call("GET", "/jobs/1", headers=anonymous).status == 401
    # a write to the JSON API needs the key itself: a cookie (which another site could make a browser
    # send) is not enough
    write = api.call("POST", "/items", json=[row("x", "http://127.0.0.1:1/x.jpg")], headers=session)
    assert write.status == 401
    assert api.call("DELETE", "/items/x", headers=session).status == 401
    # a key revoked after the sign-in ends the session at the next request
    with ApiServices.of(api.app).services.database.session() as db:
        from db.api_keys import revoke_key

        revoke_key(db, TEST_ADMIN_KEY.split("_", 2)[1])
    assert api.call("GET", "/jobs/1", headers=session).status == 401
