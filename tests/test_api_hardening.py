"""Answers that reveal nothing and limits that hold (real HTTP, SQLite, Milvus Lite, PostgreSQL): generic
messages for refused, unreachable or undecodable images, public item views without server paths or
ingestion internals, no collection load inside a request, a stricter pixel limit for queries than for
trusted feeds, database timeouts, and a compose file that publishes no backend."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from http_server import LocalHTTPServer, Response
from live_server import TEST_ADMIN_KEY, LiveServer, local_fetch
from PIL import Image
from sqlalchemy import text

from clothes_search.settings import DatabaseSettings, FetchSettings
from db import migrate
from db.session import Database, DatabaseUnavailableError
from ingestion.errors import ImageTooLargeError
from ingestion.feed import parse_records
from ingestion.images import decode_image
from search.api_services import ApiServices
from search.app import create_app
from workers.dispatch import InProcessDispatcher
from workers.submit import submit_rows

REPO_ROOT = Path(__file__).resolve().parent.parent
LIGHT = {
    "detectors": [{"name": "whole", "backend": "whole_image"}],
    "embedders": [{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}],
}
ANONYMOUS = {"X-API-Key": ""}  # no key at all (the test client would send the admin key otherwise)


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (120, 150)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def strict_api(make_settings, tmp_path, serve) -> LiveServer:
    """The default fetch policies (nothing on this machine may be fetched), no index needed."""
    settings = make_settings(
        database={"url": f"sqlite:///{tmp_path / 'c.db'}"},
        milvus={"uri": str(tmp_path / "m.db"), "index_type": "FLAT"},
        api={"bootstrap_admin_key": TEST_ADMIN_KEY},
        **LIGHT,
    )
    migrate.upgrade(settings.database)
    return serve(create_app(settings))


def similar(api: LiveServer, url: str):
    return api.call("GET", f"/similar?image_url={url}", headers=ANONYMOUS)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("http://10.1.2.3/shirt.jpg", "10.1.2.3"),  # a private address, literally
        ("http://localhost/shirt.jpg", "127.0.0.1"),  # one a name resolves to: no DNS oracle
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://example.invalid:22/", "22"),  # a port other than 80 / 443: refused before any lookup
    ],
)
def test_refused_urls_answer_a_generic_message(strict_api, url, secret):
    reply = similar(strict_api, url)
    assert reply.status == 400 and reply.json["error"]["code"] == "unsafe_url"
    message = reply.json["error"]["message"]
    assert secret not in message and "allowed_networks" not in message and "CLOTHES_SEARCH" not in message


def test_a_remote_banner_and_a_bodys_bytes_are_not_echoed(make_settings, tmp_path, serve):
    banner = socket.create_server(("127.0.0.1", 0))  # answers like an SSH server, not HTTP
    port = banner.getsockname()[1]

    def answer() -> None:
        for _ in range(3):
            try:
                connection, _ = banner.accept()
            except OSError:
                return
            connection.sendall(b"SSH-2.0-OpenSSH_9.6 secret-host-banner\r\n")
            connection.close()

    threading.Thread(target=answer, daemon=True).start()
    settings = make_settings(
        database={"url": f"sqlite:///{tmp_path / 'c.db'}"},
        **local_fetch(),
        api={"bootstrap_admin_key": TEST_ADMIN_KEY},
    )
    migrate.upgrade(settings.database)
    api = serve(create_app(settings))
    try:
        reply = similar(api, f"http://127.0.0.1:{port}/x.jpg")
        assert (
            reply.status == 502
            and "OpenSSH" not in reply.body.decode()
            and "banner" not in reply.body.decode()
        )
        upload = api.call(
            "POST",
            "/similar",
            data=b"SECRET-CONTENT-1234 and no image",
            headers={**ANONYMOUS, "Content-Type": "image/jpeg"},
        )
        assert upload.status == 415 and b"SECRET" not in upload.body
    finally:
        banner.close()


@pytest.fixture
def catalog(make_settings, tmp_path, serve) -> Iterator[tuple[LiveServer, object]]:
    """Two items indexed: one from the API (an http image), one from a trusted feed (a local file)."""
    settings = make_settings(
        database={"url": f"sqlite:///{tmp_path / 'c.db'}"},
        milvus={"uri": str(tmp_path / "m.db"), "index_type": "FLAT"},
        api={"bootstrap_admin_key": TEST_ADMIN_KEY},
        **local_fetch(),
        **LIGHT,
    )
    migrate.upgrade(settings.database)
    app = create_app(settings)
    api = serve(app)
    services = ApiServices.of(app).services
    (tmp_path / "local.jpg").write_bytes(jpeg((200, 30, 30)))
    with LocalHTTPServer() as images:
        url = images.add("/web.jpg", Response(jpeg((190, 40, 40)), content_type="image/jpeg"))
        parsed = parse_records(
            [{"sku": "web", "image_url": url}, {"sku": "local", "image_path": str(tmp_path / "local.jpg")}]
        )
        done = submit_rows(
            services.database,
            services.store,
            [r for _, r in parsed.rows],
            source="feed",
            trusted=True,
            local_root=tmp_path,
        )
        InProcessDispatcher(services).submit(done.queued, done.job_id)
        yield api, app


@pytest.mark.slow
def test_the_public_item_view_shows_no_server_path_nor_ingestion_internals(catalog):
    api, _ = catalog
    query = jpeg((200, 30, 30))
    public = api.call(
        "POST", "/similar?rerank=none", data=query, headers={**ANONYMOUS, "Content-Type": "image/jpeg"}
    )
    assert public.status == 200, public.body
    items = {r["sku"]: r["item"] for g in public.json["garments"] for r in g["results"]}
    assert set(items) == {"web", "local"}
    assert items["local"]["image_url"] is None and items["web"]["image_url"].startswith("http://")
    assert not {"last_error", "attempts", "last_job_id", "status"} & set(items["local"])
    staff = api.call("POST", "/similar?rerank=none", data=query, headers={"Content-Type": "image/jpeg"})
    inside = {r["sku"]: r["item"] for g in staff.json["garments"] for r in g["results"]}
    assert inside["local"]["image_url"].endswith("local.jpg") and inside["local"]["status"] == "indexed"


@pytest.mark.slow
def test_a_released_collection_answers_503_at_once_instead_of_loading_in_the_request(catalog):
    api, app = catalog
    store = ApiServices.of(app).services.store
    store.release(store.resolve_alias(store.settings.live_alias))
    started = time.monotonic()
    reply = api.call("POST", "/similar", data=jpeg((1, 2, 3)), headers={"Content-Type": "image/jpeg"})
    assert reply.status == 503 and reply.json["error"]["code"] == "vector_store_unavailable", reply.body
    assert time.monotonic() - started < 10


def test_queries_have_a_stricter_pixel_limit_than_trusted_feeds(strict_api, make_settings):
    big = jpeg((10, 10, 10), size=(6000, 3000))  # 18 Mpx, a small file
    reply = strict_api.call("POST", "/similar", data=big, headers={**ANONYMOUS, "Content-Type": "image/jpeg"})
    assert reply.status == 413 and reply.json["error"]["code"] == "too_large"
    settings = make_settings()
    assert decode_image(big, settings.fetch).original_size == (6000, 3000)  # a trusted feed may
    with pytest.raises(ImageTooLargeError):
        decode_image(big, settings.query_fetch)
    assert settings.query_fetch.max_pixels < FetchSettings().max_pixels


def test_postgresql_statements_and_connections_time_out(postgres_url):
    database = Database(DatabaseSettings(url=postgres_url, statement_timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError), database.session() as session:
        session.execute(text("SELECT pg_sleep(5)"))
    assert time.monotonic() - started < 3
    database.dispose()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never speaks: a hung database host
    port = silent.getsockname()[1]
    hung = Database(DatabaseSettings(url=f"postgresql+psycopg2://u@127.0.0.1:{port}/x", connect_timeout_s=1))
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailableError), hung.session() as session:
            session.execute(text("SELECT 1"))
        assert time.monotonic() - started < 5
    finally:
        silent.close()
        hung.dispose()


def test_the_compose_stack_publishes_no_backend_and_writes_no_password():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("postgres", "redis", "milvus"):
        assert "ports" not in services[name], f"{name} is published"
    text_of = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "clothes:clothes@" not in text_of and "POSTGRES_PASSWORD: clothes" not in text_of
    assert "${POSTGRES_PASSWORD" in text_of and "${REDIS_PASSWORD" in text_of
    assert all(p.startswith("127.0.0.1:") for p in services["api"]["ports"])  # behind a proxy on the host
