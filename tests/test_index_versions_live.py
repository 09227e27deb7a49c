"""New models without downtime, over real HTTP: ``index build`` beside the live index while a live
``clothes-search serve`` (2 gunicorn workers, a Milvus Lite server) answers a steady stream of
``/similar`` requests and ingests and deletes items; ``index activate`` switches and rolls back.
A build killed half-way resumes without embedding again what it had done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from http_server import LocalHTTPServer, Response
from live_server import (
    CLI,
    TEST_ADMIN_KEY,
    HttpClient,
    ServeProcess,
    clothes_search_env,
    ingest_rows,
    local_fetch,
    run_cli,
    wait_for_job,
)
from sample_images import garment, jpeg, street_photo

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent

COLOURS = [(200, 30, 30), (30, 160, 40), (30, 60, 200), (230, 200, 20), (120, 40, 160), (20, 180, 190)]
MOTIFS = ["none", "dots", "checks", "diagonal", "vertical", "cross"]
PRODUCTS = {
    f"{pattern}-{i}": garment(colour, pattern, MOTIFS[i])
    for pattern in ("plain", "stripes")
    for i, colour in enumerate(COLOURS)
}
LATE, DELETED = "stripes-5", "plain-1"  # ingested during the build / deleted during the build
FIRST = [sku for sku in PRODUCTS if sku != LATE]
WHOLE_IMAGE = [{"name": "whole", "backend": "whole_image", "options": {"category": "top"}}]
OLD_MODELS: dict[str, Any] = {
    "detectors": WHOLE_IMAGE,
    "embedders": [{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}],
}


def models_toml(embedder: str) -> str:
    return f"""
[[detectors]]
name = "whole"
backend = "whole_image"
options = {{ category = "top" }}

[[embedders]]
{embedder}
"""


NEW_MODELS = models_toml('name = "lite1"\nbackend = "efficientnet_lite"\nmodel = "lite1"')
RESUMED_MODELS = models_toml(
    'name = "lite0s"\nbackend = "efficientnet_lite"\nmodel = "lite0"\nimage_size = 192'
)


@dataclass
class Catalog:
    api: HttpClient
    images: LocalHTTPServer
    env: dict[str, str]
    root: Path
    urls: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, models_dir, milvus_server_uri) -> Iterator[Catalog]:
    root = tmp_path_factory.mktemp("versions")
    env = clothes_search_env(
        models_dir=models_dir,
        database={"url": f"sqlite:///{root / 'catalog.db'}"},
        milvus={"uri": milvus_server_uri, "collection_prefix": "crops_switch", "live_alias": "switch_live"},
        **local_fetch(max_bytes=300_000, read_timeout_s=2, total_timeout_s=5),
        api={"bootstrap_admin_key": TEST_ADMIN_KEY, "search_rate_limit": "100000/minute"},
        versions={"heartbeat_s": 0.5, "build_batch_size": 2},
        **OLD_MODELS,
    )
    upgrade = run_cli("db", "upgrade", env=env, cwd=REPO_ROOT)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    with LocalHTTPServer() as images:
        found = Catalog(None, images, env, root)  # type: ignore[arg-type]
        for sku, image in PRODUCTS.items():
            found.urls[sku] = images.add(
                f"/catalog/{sku}.jpg", Response(jpeg(image), content_type="image/jpeg")
            )
        with ServeProcess(env, cwd=REPO_ROOT, log_path=root / "serve.log", workers=2) as api:
            found.api = api
            ingest_rows(api, [row(found, sku) for sku in FIRST])
            yield found


def row(catalog: Catalog, sku: str) -> dict[str, Any]:
    return {"sku": sku, "image_url": catalog.urls[sku], "category": "top", "brand": "acme"}


def search(api: HttpClient, sku: str, timeout_s: float = 30.0) -> tuple[int, dict[str, Any]]:
    """/similar for a street photo of ``sku``'s garment (uploaded, its box given): status and body."""
    photo, box = street_photo(PRODUCTS[sku])
    reply = api.call(
        "POST",
        f"/similar?k=4&rerank=none&garment={','.join(map(str, box))}",
        data=jpeg(photo),
        headers={"Content-Type": "image/jpeg"},
        timeout_s=timeout_s,
    )
    return reply.status, (json.loads(reply.body) if reply.body else {})


def top_skus(body: dict[str, Any]) -> list[str]:
    return [r["sku"] for r in body["garments"][0]["results"]]


class Stream(threading.Thread):
    """A steady stream of /similar requests; every answer's status and signature, in order."""

    def __init__(self, api: HttpClient) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.answers: list[tuple[int, str | None]] = []
        self._finished = threading.Event()

    def run(self) -> None:
        skus = list(PRODUCTS)
        n = 0
        while not self._finished.is_set():
            status, body = search(self.api, skus[n % len(skus)], timeout_s=60)
            self.answers.append((status, body.get("signature")))
            n += 1
            time.sleep(0.05)

    def stop(self) -> list[tuple[int, str | None]]:
        self._finished.set()
        self.join(timeout=120)
        return self.answers


def versions(catalog: Catalog) -> list[dict[str, Any]]:
    status = run_cli("index", "status", "--json", env=catalog.env, cwd=REPO_ROOT)
    assert status.returncode == 0, status.stdout + status.stderr
    return json.loads(status.stdout)["versions"]


def version_of(catalog: Catalog, signature_not: set[str]) -> dict[str, Any] | None:
    return next((v for v in versions(catalog) if v["signature"] not in signature_not), None)


def start_build(catalog: Catalog, toml: str, *options: str) -> subprocess.Popen[str]:
    config = catalog.root / f"models-{abs(hash(toml))}.toml"
    config.write_text(toml)
    return subprocess.Popen(
        [str(CLI), "index", "build", "--config", str(config), "--nice", "0", *options],
        env=catalog.env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition: Any, timeout_s: float, what: str, build: subprocess.Popen[str]) -> Any:
    """Poll ``condition`` until it is truthy; fails when ``build`` ends first or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        if build.poll() is not None:
            out, err = build.communicate()
            pytest.fail(f"{what}: the build ended first ({build.returncode}):\n{out}\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.3)


def test_a_rebuild_with_new_models_switches_and_rolls_back_without_a_failed_request(catalog):
    api = catalog.api
    status, before = search(api, "plain-3")
    assert status == 200, before
    old_signature, old_answer = before["signature"], top_skus(before)
    assert old_answer[0] == "plain-3"
    stream = Stream(api)
    stream.start()
    build = start_build(catalog, NEW_MODELS, "--max-rate", "2")
    try:
        new = wait_for(lambda: version_of(catalog, {old_signature}), 120, "the new version", build)
        # while it builds: an item arrives (written to both versions) and one is deleted (from both)
        reply = api.call("POST", "/items", json=[row(catalog, LATE)])
        assert reply.status == 202, reply.body
        assert wait_for_job(api, reply.header("Location"), timeout_s=120)["done"] == 1
        assert api.call("DELETE", f"/items/{DELETED}").status == 204
        out, err = build.communicate(timeout=600)
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
    assert build.returncode == 0, out + err
    report = json.loads(out)
    assert report["complete"] and report["held"] == report["total"] == len(FIRST), report
    assert "re-indexing" in err  # the progress bar
    activated = run_cli("index", "activate", new["collection"], env=catalog.env, cwd=REPO_ROOT)
    assert activated.returncode == 0, activated.stdout + activated.stderr
    time.sleep(2)
    answers = stream.stop()

    assert answers and all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:5]
    signatures = [signature for _, signature in answers]
    switch = signatures.index(new["signature"])
    assert switch > 0 and set(signatures[:switch]) == {old_signature}, signatures
    assert set(signatures[switch:]) == {new["signature"]}, signatures  # never back, never mixed
    status, late = search(api, LATE)
    assert status == 200 and late["signature"] == new["signature"] and top_skus(late)[0] == LATE, late
    status, deleted = search(api, DELETED)
    assert status == 200 and DELETED not in top_skus(deleted), deleted

    back = run_cli("index", "activate", f"crops_switch_{old_signature}", env=catalog.env, cwd=REPO_ROOT)
    assert back.returncode == 0, back.stdout + back.stderr
    status, again = search(api, "plain-3")
    assert status == 200 and again["signature"] == old_signature
    assert top_skus(again) == old_answer  # the old answers are back
    status, late = search(api, LATE)
    assert top_skus(late)[0] == LATE  # ingested during the build: written to the old version too
    assert DELETED not in top_skus(search(api, DELETED)[1])
    refused = run_cli("index", "drop", f"crops_switch_{old_signature}", env=catalog.env, cwd=REPO_ROOT)
    assert refused.returncode != 0 and "is live" in refused.stderr


def test_a_build_killed_half_way_finishes_without_embedding_again_what_it_had_done(catalog):
    known = {v["signature"] for v in versions(catalog)}
    build = start_build(catalog, RESUMED_MODELS, "--max-rate", "1")
    try:
        version = wait_for(
            lambda: (v := version_of(catalog, known)) and v["items_held"] >= 4 and v,
            240,
            "4 items held",
            build,
        )
    finally:
        os.killpg(build.pid, signal.SIGKILL)
        build.communicate()
    held = next(v for v in versions(catalog) if v["collection"] == version["collection"])["items_held"]
    assert 4 <= held < version["items_total"]
    again = start_build(catalog, RESUMED_MODELS)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, out + err
    report = json.loads(out)
    assert report["held_before"] == held
    assert report["embedded"] == report["total"] - held  # only what was missing
    assert report["complete"], report
