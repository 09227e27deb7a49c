"""``/similar`` over real HTTP, on an index built by real ingestion (POST /items, in-process).

The catalog is served by a live ``clothes-search serve`` process (gunicorn, one worker) configured
only through ``CLOTHES_SEARCH_*`` environment variables, on a SQLite file and embedded Milvus Lite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from http_server import LocalHTTPServer, Response
from live_server import (
    TEST_ADMIN_KEY,
    HttpClient,
    ServeProcess,
    clothes_search_env,
    ingest_rows,
    local_fetch,
    run_cli,
)
from PIL import Image
from sample_images import garment, jpeg, street_photo

from clothes_search.settings import Settings
from db import migrate
from search.app import create_app

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent

COLOURS = [(200, 30, 30), (30, 160, 40), (30, 60, 200), (230, 200, 20), (120, 40, 160), (20, 180, 190)]
PATTERNS = ["plain", "stripes"]
MOTIFS = [
    "none",
    "dots",
    "checks",
    "diagonal",
    "vertical",
    "cross",
]  # one per colour: items differ in texture too
# two whole-image "detectors" with different categories: every item gets two crops (collapse test),
# kept as two garments (by default the same box under two classes is one garment with an alternative)
MODELS: dict[str, Any] = {
    "detectors": [
        {"name": "whole_top", "backend": "whole_image", "options": {"category": "top"}},
        {"name": "whole_bottom", "backend": "whole_image", "options": {"category": "bottom", "score": 0.5}},
    ],
    "fusion": {"same_garment_iou": 1.0},
    "embedders": [{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}],
}


SKUS = [f"{pattern}-{i}" for pattern in PATTERNS for i in range(len(COLOURS))]


@pytest.fixture(scope="module")
def catalog_env(tmp_path_factory, models_dir, milvus_target) -> dict[str, str]:
    """The settings of the served catalog, once on a Milvus Lite server (so that admin commands can run
    beside it) and once on a Milvus standalone server, each with its default index."""
    root = tmp_path_factory.mktemp("similar")
    return clothes_search_env(
        models_dir=models_dir,
        database={"url": f"sqlite:///{root / 'catalog.db'}"},
        milvus=milvus_target.settings,
        **local_fetch(max_bytes=300_000, read_timeout_s=1, total_timeout_s=2),
        api={"bootstrap_admin_key": TEST_ADMIN_KEY},
        **MODELS,
    )


@pytest.fixture(scope="module")
def catalog(
    tmp_path_factory, catalog_env
) -> Iterator[tuple[HttpClient, LocalHTTPServer, dict[str, Image.Image]]]:
    root = tmp_path_factory.mktemp("serve")
    env = catalog_env
    upgrade = run_cli("db", "upgrade", env=env, cwd=REPO_ROOT)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    products = {f"{p}-{i}": garment(c, p, MOTIFS[i]) for p in PATTERNS for i, c in enumerate(COLOURS)}
    with LocalHTTPServer() as images:
        rows = []
        for n, (sku, image) in enumerate(products.items()):
            url = images.add(f"/catalog/{sku}.jpg", Response(jpeg(image), content_type="image/jpeg"))
            rows.append(
                {
                    "sku": sku,
                    "image_url": url,
                    "category": "top" if n % 2 else "dress",
                    "brand": "acme" if n < 6 else "zed",
                    "price": 10 + 10 * n,
                    "currency": "EUR",
                    "in_stock": n % 3 != 0,
                    "attributes": {"fit": "slim" if n % 4 == 0 else "loose"},
                }
            )
        with ServeProcess(env, cwd=REPO_ROOT, log_path=root / "serve.log", workers=1) as api:
            ingest_rows(api, rows)
            yield api, images, products


def similar(api: HttpClient, **params: Any) -> Any:
    return api.call("GET", "/similar?" + urlencode(params, doseq=True))


def skus_of(body: dict[str, Any], garment_index: int = 0) -> list[str]:
    return [r["sku"] for r in body["garments"][garment_index]["results"]]


@pytest.mark.parametrize("rerank", ["none", "k_reciprocal"])
def test_a_street_photo_of_a_catalog_garment_finds_it_first(catalog, rerank):
    api, images, products = catalog
    for sku in ("plain-2", "stripes-4"):
        photo, box = street_photo(products[sku])
        url = images.add(f"/query/{sku}-{rerank}.jpg", Response(jpeg(photo), content_type="image/jpeg"))
        reply = similar(api, image_url=url, garment=",".join(map(str, box)), rerank=rerank, k=5)
        assert reply.status == 200, reply.body
        body = reply.json
        assert skus_of(body)[0] == sku, body
        assert set(body["timings_ms"]) >= {"fetch", "embed", "ann", "db"}
        assert "Server-Timing" in reply.headers


def test_several_crops_of_one_item_collapse_into_one_result(catalog):
    api, images, products = catalog
    url = images.add("/query/collapse.jpg", Response(jpeg(products["plain-0"]), content_type="image/jpeg"))
    body = similar(api, image_url=url, k=12, rerank="none").json
    assert len(body["garments"]) == 2  # the two whole-image "detectors"
    for index in (0, 1):
        results = skus_of(body, index)
        assert len(results) == len(set(results)) == 12  # 24 crops, 12 items
        assert results[0] == "plain-0"
        first = body["garments"][index]["results"][0]
        assert first["item"]["sku"] == "plain-0" and first["crop"]["category"] in ("top", "bottom")


def test_upload_as_multipart_and_as_raw_body(catalog):
    api, _, products = catalog
    data = jpeg(products["stripes-1"])
    boundary = "xxBOUNDARYxx"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    for body, head in ((multipart, headers), (data, {"Content-Type": "image/jpeg"})):
        reply = api.call("POST", "/similar?k=3&garment=largest", data=body, headers=head)
        assert reply.status == 200, reply.body
        assert len(reply.json["garments"]) == 1
        assert skus_of(reply.json)[0] == "stripes-1"


def test_every_filter_is_honoured(catalog):
    api, images, products = catalog
    url = images.add("/query/filters.jpg", Response(jpeg(products["plain-1"]), content_type="image/jpeg"))
    n = {sku: i for i, sku in enumerate(SKUS)}

    def found(**filters: Any) -> set[str]:
        reply = similar(api, image_url=url, k=100, garment="largest", **filters)
        assert reply.status == 200, reply.body
        return set(skus_of(reply.json))

    assert found() == set(SKUS)
    assert found(brand="zed") == {s for s in SKUS if n[s] >= 6}
    assert found(category="dress") == {s for s in SKUS if n[s] % 2 == 0}
    assert found(category=["dress", "top"]) == set(SKUS)
    assert found(price_min=50, price_max=80) == {s for s in SKUS if 50 <= 10 + 10 * n[s] <= 80}
    assert found(in_stock="false") == {s for s in SKUS if n[s] % 3 == 0}
    assert found(**{"attr.fit": "slim"}) == {s for s in SKUS if n[s] % 4 == 0}
    assert found(brand="acme", in_stock="true", price_max=40) == {
        s for s in SKUS if n[s] < 6 and n[s] % 3 and n[s] < 4
    }
    assert found(brand='acme" or brand != "') == set()  # text never changes the expression


def test_query_expansion_can_be_switched_on(catalog):
    api, images, products = catalog
    url = images.add("/query/qe.jpg", Response(jpeg(products["plain-5"]), content_type="image/jpeg"))
    reply = similar(api, image_url=url, k=3, garment="largest", qe="on", rerank="none")
    assert reply.status == 200 and skus_of(reply.json)[0] == "plain-5"


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"k": "0"}, "k"),
        ({"k": "101"}, "k"),
        ({"k": "x"}, "k"),
        ({"k": "\u00b2"}, "k"),  # a digit to str.isdigit, not to int()
        ({"rerank": "magic"}, "rerank"),
        ({"garment": "1,2,3"}, "garment"),
        ({"garment": "5,5,1,1"}, "garment"),
        ({"price_min": "cheap"}, "price_min"),
        ({"in_stock": "maybe"}, "in_stock"),
        ({"colour": "red"}, "colour"),
        ({"attr.bad name": "x"}, "attributes"),
        ({}, "image_url"),
    ],
)
def test_invalid_parameters_answer_400_naming_them(catalog, params, parameter):
    api, images, products = catalog
    url = images.add("/query/any.jpg", Response(jpeg(products["plain-0"]), content_type="image/jpeg"))
    query = {"image_url": url, **params} if parameter != "image_url" else params
    reply = similar(api, **query)
    assert reply.status == 400, reply.body
    assert reply.json["error"]["parameter"] == parameter, reply.json


def test_image_errors_map_to_their_status(catalog):
    api, images, _ = catalog
    html = images.add("/bad/page.jpg", Response(b"<html>no</html>", content_type="image/jpeg"))
    huge = images.add("/bad/huge.jpg", Response(b"\xff\xd8\xff" + b"0" * 400_000, content_type="image/jpeg"))
    slow = images.add("/bad/slow.jpg", Response(jpeg(Image.new("RGB", (50, 50))), chunk_size=50, delay_s=0.5))
    cases = [
        (html, 415, "decode_error"),
        (huge, 413, "too_large"),
        (images.url("/bad/missing.jpg"), 502, "fetch_error"),
        (slow, 504, "fetch_timeout"),
        ("file:///etc/passwd", 400, "unsafe_url"),
        ("http://169.254.169.254/latest/meta-data/", 400, "unsafe_url"),
        ("http://10.0.0.1/x.jpg", 400, "unsafe_url"),
    ]
    for url, status, code in cases:
        reply = similar(api, image_url=url)
        assert (reply.status, reply.json["error"]["code"]) == (status, code), (url, reply.body)
    outside = similar(api, image_url=images.url("/catalog/plain-0.jpg"), garment="1000,1000,1200,1200")
    assert (outside.status, outside.json["error"]["code"]) == (422, "no_garment")
    empty = api.call("POST", "/similar", data=b"", headers={"Content-Type": "image/jpeg"})
    assert empty.status == 400


def test_a_dba_and_whitened_version_made_live_by_the_admin_command_is_served(catalog, catalog_env):
    """Runs after the other catalog tests: it swaps the live index version under the running server."""
    api, images, products = catalog
    command = ["index", "postprocess", "--dba-top-n", "1", "--pca-dim", "16", "--activate"]
    built = run_cli(*command, env=catalog_env, cwd=REPO_ROOT)
    assert built.returncode == 0, built.stderr
    assert '"dimension": 16' in built.stdout and '"vectors": 24' in built.stdout
    for sku in ("plain-3", "stripes-0"):
        photo, box = street_photo(products[sku])
        url = images.add(f"/query/pp-{sku}.jpg", Response(jpeg(photo), content_type="image/jpeg"))
        reply = similar(api, image_url=url, garment=",".join(map(str, box)), k=5)
        assert reply.status == 200, reply.body
        assert skus_of(reply.json)[0] == sku, reply.json
    filtered = similar(api, image_url=url, k=100, garment="largest", brand="zed")
    assert set(skus_of(filtered.json)) == set(SKUS[6:])  # filters hold in the derived collection too
    listing = run_cli("index", "status", env=catalog_env, cwd=REPO_ROOT).stdout.splitlines()
    base = next(line.split()[0] for line in listing if " retired " in line and "[DBA" not in line)
    assert run_cli("index", "activate", base, env=catalog_env, cwd=REPO_ROOT).returncode == 0


def test_loopback_is_refused_by_default_and_no_index_is_503(tmp_path, models_dir, serve):
    settings = Settings.load(
        models_dir=models_dir,
        database={"url": f"sqlite:///{tmp_path / 'c.db'}"},
        milvus={"uri": str(tmp_path / "m.db"), "index_type": "FLAT"},
        **MODELS,
    )
    migrate.upgrade(settings.database)
    api = serve(create_app(settings))
    refused = similar(api, image_url=f"http://127.0.0.1:{api.port}/healthz")
    assert (refused.status, refused.json["error"]["code"]) == (400, "unsafe_url")
    upload = api.call(
        "POST", "/similar", data=jpeg(garment((1, 2, 3), "plain")), headers={"Content-Type": "image/jpeg"}
    )
    assert (upload.status, upload.json["error"]["code"]) == (503, "index_not_ready")
