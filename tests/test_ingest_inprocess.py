"""The embedded default: ``clothes-search ingest`` with no broker runs the same tasks in-process
(SQLite + Milvus Lite file), with the same outcomes as the queue."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from http_server import LocalHTTPServer, Response
from sample_images import product_shot
from sqlalchemy import select

from clothes_search.settings import DatabaseSettings, MilvusSettings
from db.models import IndexVersion, IngestJob, Item, ItemStatus
from db.session import Database
from db.vectors import VectorStore

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("clothes-search"))


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    product_shot(colour, size=(120, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def env(tmp_path, models_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOTHES_SEARCH_")}
    env.update(
        CLOTHES_SEARCH_MODELS_DIR=str(models_dir),
        CLOTHES_SEARCH_DATABASE__URL=f"sqlite:///{tmp_path / 'catalog.db'}",
        CLOTHES_SEARCH_MILVUS__URI=str(tmp_path / "milvus.db"),
        CLOTHES_SEARCH_MILVUS__INDEX_TYPE="FLAT",
        CLOTHES_SEARCH_FETCH__ALLOWED_NETWORKS='["127.0.0.1/32"]',
        CLOTHES_SEARCH_DETECTORS='[{"name": "whole", "backend": "whole_image"}]',
        CLOTHES_SEARCH_EMBEDDERS='[{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}]',
    )
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_embedded_ingestion_end_to_end(env, tmp_path, astronaut_path):
    assert "database is at revision base" in cli(env, "ingest", str(tmp_path / "none.jsonl")).stderr
    assert cli(env, "db", "upgrade").returncode == 0
    with LocalHTTPServer() as images:
        urls = [images.add(f"/{i}.jpg", Response(jpeg((40 * i, 90, 90)))) for i in range(5)]
        rows = [
            {"sku": f"S{i}", "image_url": url, "price": 10, "currency": "EUR", "brand": "acme"}
            for i, url in enumerate(urls)
        ]
        # a trusted feed's local image: relative to the feed's folder (the only folder it may read)
        (tmp_path / "astronaut.jpg").write_bytes(astronaut_path.read_bytes())
        rows.append({"sku": "LOCAL", "image_path": "astronaut.jpg", "category": "top"})
        rows.append({"sku": "GONE", "image_url": images.url("/missing.jpg")})
        feed = tmp_path / "feed.jsonl"
        feed.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"sku": "NOIMG"}\n')
        first = cli(env, "ingest", str(feed))
        assert first.returncode == 0, first.stderr
        assert "7 rows ok, 1 rejected; 7 queued" in first.stdout
        assert "feed.jsonl:8: NOIMG: image_url: required" in first.stderr
        assert "6 indexed (6 embedded, 0 unchanged), 1 failed" in first.stdout
        assert "failed GONE: fetch_error" in first.stderr and "404" in first.stderr

        again = cli(env, "ingest", str(feed))
        assert "0 queued" in again.stdout and "7 unchanged" in again.stdout

        rows[0]["price"] = 3  # metadata-only
        feed.write_text("".join(json.dumps(r) + "\n" for r in rows))
        changed = cli(env, "ingest", str(feed))
        assert "1 metadata-only updates" in changed.stdout and "0 queued" in changed.stdout

        refreshed = cli(env, "ingest", str(feed), "--refresh")  # queued, but the bytes did not change
        assert "6 indexed (0 embedded, 6 unchanged), 1 failed" in refreshed.stdout

    database = Database(DatabaseSettings(url=env["CLOTHES_SEARCH_DATABASE__URL"]))
    with database.session() as session:
        states = {i.sku: i.status for i in session.scalars(select(Item))}
        assert states.pop("GONE") == ItemStatus.FAILED
        assert set(states.values()) == {ItemStatus.INDEXED}
        assert sum(job.embedded for job in session.scalars(select(IngestJob))) == 6
        collection = session.scalar(select(IndexVersion.collection_name))
    database.dispose()
    with VectorStore(MilvusSettings(uri=env["CLOTHES_SEARCH_MILVUS__URI"])) as store:
        assert store.count(collection) == 6
        assert store.item_fields(collection, ["S0"])["S0"].price == 3
