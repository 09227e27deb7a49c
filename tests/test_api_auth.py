"""Who gets in, over real HTTP against ``clothes-search serve``: API keys with roles, revocation, and
the limits that hold under abuse (rates per key, /similar's concurrency per process) while the server
keeps serving everyone else."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_server import LocalHTTPServer, Response
from live_server import TEST_ADMIN_KEY, ServeProcess, clothes_search_env, local_fetch, run_cli
from PIL import Image
from sqlalchemy import select

from clothes_search.settings import DatabaseSettings
from db.models import IngestJob
from db.session import Database

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "detectors": [{"name": "whole", "backend": "whole_image"}],
    "embedders": [{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}],
}


def jpeg(colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 200), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def environment(root: Path, models_dir: Path, **api: object) -> dict[str, str]:
    return clothes_search_env(
        models_dir=models_dir,
        data_dir=root / "data",
        database={"url": f"sqlite:///{root / 'catalog.db'}"},
        milvus={"uri": str(root / "milvus.db"), "index_type": "FLAT"},
        api={"bootstrap_admin_key": TEST_ADMIN_KEY, **api},
        **local_fetch(),
        **MODELS,
    )


def make_key(env: dict[str, str], name: str, *roles: str) -> str:
    made = run_cli("keys", "create", "--name", name, *(f"--role={r}" for r in roles), env=env, cwd=REPO_ROOT)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture(scope="module")
def private_api(
    tmp_path_factory, models_dir
) -> Iterator[tuple[ServeProcess, dict[str, str], dict[str, str]]]:
    """A server whose /similar needs the search role, and one key per role."""
    root = tmp_path_factory.mktemp("auth")
    env = environment(root, models_dir, public_search=False)
    assert run_cli("db", "upgrade", env=env, cwd=REPO_ROOT).returncode == 0
    keys = {role: make_key(env, f"{role}-client", role) for role in ("search", "catalog")}
    with ServeProcess(env, cwd=REPO_ROOT, log_path=root / "serve.log") as server:
        server.api_key = None  # every call below says which key it carries
        yield server, keys, env


def call(server: ServeProcess, method: str, path: str, key: str | None, **kwargs: object):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return server.call(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]


# (method, path, body, the role that opens it, the status it answers past the check)
ENDPOINTS = [
    ("POST", "/items", [{"sku": "no-image"}], "catalog", 422),
    ("GET", "/jobs/1", None, "catalog", 404),
    ("GET", "/items/nothing", None, "catalog", 404),
    ("DELETE", "/items/nothing", None, "admin", 404),
    ("GET", "/metrics", None, "admin", 200),
    ("GET", "/similar", None, "search", 400),  # past the check: image_url is missing
]


@pytest.mark.parametrize(
    ("method", "path", "body", "role", "status"), ENDPOINTS, ids=[e[1] for e in ENDPOINTS]
)
def test_each_endpoint_without_a_key_with_a_wrong_role_and_with_the_right_one(
    private_api, method, path, body, role, status
):
    server, keys, _ = private_api
    refused = call(server, method, path, None, json=body)
    assert refused.status == 401 and refused.json["error"]["code"] == "unauthorized"
    assert refused.header("WWW-Authenticate") is not None
    wrong = keys["catalog"] if role in ("search", "admin") else keys["search"]
    forbidden = call(server, method, path, wrong, json=body)
    assert forbidden.status == 403 and forbidden.json["error"]["code"] == "forbidden"
    right = TEST_ADMIN_KEY if role == "admin" else keys[role]
    assert call(server, method, path, right, json=body).status == status
    assert call(server, method, path, TEST_ADMIN_KEY, json=body).status == status  # admin holds every role


def test_probes_and_the_document_need_no_key_but_a_wrong_key_is_refused_everywhere(private_api):
    server, _, _ = private_api
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert call(server, "GET", path, None, timeout_s=120).status == 200, path
    bogus = "cs_aaaaaaaaaa_" + "B" * 43
    assert call(server, "GET", "/openapi.json", bogus).status == 401
    assert call(server, "GET", "/items/x", "not-even-a-key").status == 401


def test_a_revoked_key_is_refused_from_then_on(private_api):
    server, _, env = private_api
    key = make_key(env, "short-lived", "catalog")
    assert call(server, "GET", "/items/x", key).status == 404
    key_id = key.split("_", 2)[1]
    revoked = run_cli("keys", "revoke", key_id, env=env, cwd=REPO_ROOT)
    assert revoked.returncode == 0, revoked.stderr
    assert call(server, "GET", "/items/x", key).status == 401
    listing = run_cli("keys", "list", env=env, cwd=REPO_ROOT).stdout
    assert key_id in listing and "revoked" in listing and key.split("_", 2)[2] not in listing


def test_a_jobs_creator_is_the_keys_name_not_a_header(private_api, tmp_path):
    server, keys, env = private_api
    with LocalHTTPServer() as images:
        url = images.add("/a.jpg", Response(jpeg(), content_type="image/jpeg"))
        reply = server.call(
            "POST",
            "/items",
            json=[{"sku": "by-key", "image_url": url}],
            headers={"Authorization": f"Bearer {keys['catalog']}", "X-Client-Id": "someone-else"},
        )
        assert reply.status == 202, reply.body
        database = Database(DatabaseSettings(url=env["CLOTHES_SEARCH_DATABASE__URL"]))
        with database.session() as session:
            job = session.scalar(select(IngestJob).where(IngestJob.id == reply.json["job_id"]))
            assert job is not None and job.created_by == "catalog-client"
        database.dispose()


def test_rates_and_concurrency_answer_429_and_503_while_others_are_served(tmp_path, models_dir):
    env = environment(tmp_path, models_dir, search_rate_limit="3/minute", max_concurrent_searches=1)
    assert run_cli("db", "upgrade", env=env, cwd=REPO_ROOT).returncode == 0
    other = make_key(env, "other-shop", "search")
    with (
        LocalHTTPServer() as images,
        ServeProcess(env, cwd=REPO_ROOT, log_path=tmp_path / "serve.log") as server,
    ):
        server.api_key = None
        body = jpeg()
        slow = images.add(
            "/slow.jpg", Response(body, content_type="image/jpeg", chunk_size=len(body) // 8, delay_s=0.4)
        )
        # concurrency: one slow search holds the only slot; a second one is turned away at once
        results: dict[str, int] = {}
        holder = threading.Thread(
            target=lambda: results.update(slow=server.call("GET", f"/similar?image_url={slow}").status)
        )
        holder.start()
        time.sleep(0.8)
        started = time.monotonic()
        busy = call(server, "GET", f"/similar?image_url={slow}", other)  # another identity: no rate limit
        assert busy.status == 503 and busy.json["error"]["code"] == "busy", busy.body
        assert busy.header("Retry-After") == "1" and time.monotonic() - started < 2
        assert server.call("GET", "/healthz").status == 200  # other endpoints keep answering
        holder.join(30)
        assert results["slow"] == 503  # it searched: no live index yet is a 503 of its own
        # rates: this client's 3 searches a minute are spent (the slow one, then two); others still pass
        assert call(server, "GET", "/similar", None).status == 400
        assert call(server, "GET", "/similar", None).status == 400
        limited = call(server, "GET", "/similar", None)
        assert limited.status == 429 and limited.json["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.header("Retry-After")) <= 60
        assert call(server, "GET", "/similar", other).status == 400  # another key has its own budget
        assert server.call("GET", "/openapi.json").status == 200  # other endpoints: another limit
