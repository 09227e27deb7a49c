"""Operational endpoints over real HTTP: /readyz, /metrics (per-app registry), /openapi.json.

The working setup is a migrated SQLite file, a Milvus Lite file and light models (the whole image,
EfficientNet-Lite0), with two catalog items ingested in-process from a local HTTP server.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from http_server import LocalHTTPServer, Response
from live_server import TEST_ADMIN_KEY, LiveServer, ingest_rows, local_fetch, served_api
from prometheus_client.parser import text_string_to_metric_families
from sample_images import product_shot

from clothes_search.settings import Settings
from db import migrate
from db.index_versions import live_version
from search.api_services import ApiServices
from search.app import create_app

LIGHT_MODELS: dict[str, Any] = {
    "detectors": [{"name": "whole", "backend": "whole_image"}],
    "embedders": [{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}],
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
REPO_ROOT = Path(__file__).resolve().parent.parent


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    product_shot(colour, size=(120, 160)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def embedded_settings(root: Path, models_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "models_dir": models_dir,
        "database": {"url": f"sqlite:///{root / 'catalog.db'}"},
        "milvus": {"uri": str(root / "m.db"), "index_type": "FLAT"},
        **local_fetch(),
        "api": {"bootstrap_admin_key": TEST_ADMIN_KEY},
        **LIGHT_MODELS,
    }
    values.update(overrides)
    return Settings.load(**values)


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def samples(server: LiveServer, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` of a /metrics scrape: label set -> value."""
    reply = server.call("GET", "/metrics")
    assert reply.status == 200, reply.body
    assert (reply.header("Content-Type") or "").startswith("text/plain"), reply.headers
    found = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def sample(server: LiveServer, name: str, **labels: str) -> float:
    return samples(server, name).get(tuple(sorted(labels.items())), 0.0)


@pytest.fixture
def bare_api(serve, make_settings, tmp_path) -> LiveServer:
    """An app whose backends are never touched by the test (nothing connects before first use); its
    metrics are public (an internal port), so that no key has to be looked up."""
    settings = make_settings(
        database={"url": f"sqlite:///{tmp_path / 'unused.db'}"}, api={"public_metrics": True}
    )
    return serve(create_app(settings))


@pytest.fixture(scope="module")
def catalog_api(tmp_path_factory, models_dir) -> Iterator[tuple[LiveServer, LocalHTTPServer]]:
    """A working embedded API with two items indexed, and the server of their images."""
    settings = embedded_settings(tmp_path_factory.mktemp("ops"), models_dir)
    migrate.upgrade(settings.database)
    with LocalHTTPServer() as images:
        rows = []
        for n, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
            url = images.add(f"/{n}.jpg", Response(jpeg(colour), content_type="image/jpeg"))
            rows.append({"sku": f"shirt-{n}", "image_url": url})
        with served_api(create_app(settings)) as api:
            ingest_rows(api, rows)
            yield api, images


# -- /readyz ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_readyz_is_ready_when_the_backends_and_models_answer(catalog_api):
    api, _ = catalog_api
    reply = api.call("GET", "/readyz")
    assert reply.status == 200, reply.body
    body = reply.json
    assert body["status"] == "ready"
    checks = body["checks"]
    assert {k: checks[k] for k in ("database", "vector_store", "models")} == dict.fromkeys(
        ("database", "vector_store", "models"), "ok"
    )
    with ApiServices.of(api.app).services.database.session() as session:
        assert checks["index"] == live_version(session).collection_name


@pytest.mark.slow
def test_readyz_answers_503_naming_an_unreachable_database(serve, tmp_path, models_dir):
    url = f"postgresql+psycopg2://clothes@127.0.0.1:{closed_port()}/catalog?connect_timeout=3"
    api = serve(create_app(embedded_settings(tmp_path, models_dir, database={"url": url})))
    reply = api.call("GET", "/readyz")
    assert reply.status == 503, reply.body
    body = reply.json
    assert body["status"] == "not_ready"
    assert body["failing"] == ["database"]
    assert body["checks"]["database"] == "failed: database_unavailable"
    assert body["checks"]["vector_store"] == body["checks"]["models"] == "ok"
    assert body["checks"]["index"] == "unknown"
    assert reply.header("Retry-After")
    assert "127.0.0.1" not in reply.body.decode()  # the details go to the log only


# -- /metrics --------------------------------------------------------------------------------------


def test_metrics_count_requests_by_endpoint_status_and_error_code(bare_api):
    requests = "clothes_search_http_requests_total"
    latency = "clothes_search_http_request_duration_seconds_count"
    health = {"endpoint": "/healthz", "method": "GET", "status": "200"}
    before = {
        "health": sample(bare_api, requests, **health),
        "not_found": sample(bare_api, "clothes_search_http_errors_total", code="not_found"),
        "latency": sample(bare_api, latency, endpoint="/healthz"),
    }
    assert bare_api.call("GET", "/healthz").status == 200
    assert bare_api.call("GET", "/healthz").status == 200
    assert bare_api.call("GET", "/no/such/route").status == 404
    assert bare_api.call("POST", "/healthz").status == 405
    assert sample(bare_api, requests, **health) == before["health"] + 2
    assert sample(bare_api, requests, endpoint="unmatched", method="GET", status="404") == 1
    assert sample(bare_api, requests, endpoint="unmatched", method="POST", status="405") == 1
    assert sample(bare_api, "clothes_search_http_errors_total", code="not_found") == before["not_found"] + 1
    assert sample(bare_api, "clothes_search_http_errors_total", code="method_not_allowed") == 1
    assert sample(bare_api, latency, endpoint="/healthz") == before["latency"] + 2


def test_each_app_has_its_own_registry(serve, make_settings, tmp_path):
    def app(name: str) -> object:
        database = {"url": f"sqlite:///{tmp_path / name}"}
        return create_app(make_settings(database=database, api={"public_metrics": True}))

    first, second = serve(app("a.db")), serve(app("b.db"))
    for _ in range(3):
        assert first.call("GET", "/healthz").status == 200
    labels = {"endpoint": "/healthz", "method": "GET", "status": "200"}
    assert sample(first, "clothes_search_http_requests_total", **labels) == 3
    assert sample(second, "clothes_search_http_requests_total", **labels) == 0


@pytest.mark.slow
def test_similar_stage_histogram_appears_after_a_search(catalog_api):
    api, images = catalog_api
    name = "clothes_search_similar_stage_duration_seconds_count"
    before = samples(api, name)
    url = images.add("/query.jpg", Response(jpeg((190, 40, 40)), content_type="image/jpeg"))
    reply = api.call("GET", "/similar?" + urlencode({"image_url": url, "k": 2}))
    assert reply.status == 200, reply.body
    after = samples(api, name)
    stages = {dict(labels)["stage"] for labels in after}
    assert {"fetch", "detect", "embed", "ann", "db"} <= stages
    for labels, count in after.items():
        assert count == before.get(labels, 0) + 1, (labels, before, after)


def test_metrics_aggregate_workers_in_multiprocess_mode(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR set, /metrics reads every process' files (a separate process)."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    script = textwrap.dedent(
        f"""
        from clothes_search.settings import Settings
        from search.app import create_app
        settings = Settings.load(
            database={{"url": "sqlite:///{tmp_path / "unused.db"}"}}, api={{"public_metrics": True}}
        )
        first, second = create_app(settings).test_client(), create_app(settings).test_client()
        first.get("/healthz")
        second.get("/healthz")
        print(second.get("/metrics").get_data(as_text=True))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOTHES_SEARCH_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(directory.glob("*.db")), "no multiprocess files written"
    pattern = r'clothes_search_http_requests_total\{endpoint="/healthz",method="GET",status="200"\} 2\.0'
    assert re.search(pattern, done.stdout), done.stdout[-3000:]


# -- /openapi.json ---------------------------------------------------------------------------------


def validate_openapi(document: dict[str, Any]) -> None:
    """openapi-spec-validator (a dev dependency) checks the document against the OpenAPI 3.0 schema."""
    from openapi_spec_validator import validate

    validate(document)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_openapi_document_is_valid_and_lists_every_route(bare_api):
    reply = bare_api.call("GET", "/openapi.json")
    assert reply.status == 200
    document = reply.json
    assert document["openapi"] == "3.0.3"
    validate_openapi(document)
    for ref in refs(document):
        resolve(document, ref)

    routes: dict[str, set[str]] = {}
    for rule in bare_api.app.url_map.iter_rules():
        if rule.endpoint.startswith("web."):  # the web app's HTML pages: not the JSON API
            continue
        path = re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: set(item) & HTTP_METHODS for path, item in document["paths"].items()}
    assert documented == routes

    for path, item in document["paths"].items():
        for method in set(item) & HTTP_METHODS:
            operation = item[method]
            assert operation["responses"], (method, path)
            for parameter in re.findall(r"\{(\w+)\}", path):
                declared = [p for p in operation.get("parameters", []) if p["in"] == "path"]
                assert [p["name"] for p in declared] == [parameter], (method, path)
    similar_get = document["paths"]["/similar"]["get"]
    assert {"200", "400", "413", "415", "422", "502", "503", "504"} <= set(similar_get["responses"])
    post_body = document["paths"]["/similar"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*"} <= set(post_body)
    names = {p["name"]: p for p in similar_get["parameters"]}
    assert names["category"]["explode"] and names["category"]["schema"]["type"] == "array"
    assert {"202", "400", "413", "415", "422", "503"} <= set(document["paths"]["/items"]["post"]["responses"])
    json.dumps(document)  # plain JSON all the way down
