"""The ingestion queue end to end: a real Redis broker, real Celery worker processes, PostgreSQL,
the Milvus Lite server, images over real HTTP (some broken), and a worker killed with SIGKILL."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from http_server import LocalHTTPServer, Response
from sample_images import product_shot
from sqlalchemy import func, select

from clothes_search.settings import DatabaseSettings, MilvusSettings
from db import migrate
from db.models import Crop, IndexVersion, IngestJob, Item, ItemStatus
from db.session import Database
from db.vectors import VectorStore

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CLOTHES_SEARCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
CLI = str(Path(sys.executable).with_name("clothes-search"))


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    product_shot(colour, size=(120, 160)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@pytest.fixture
def broker() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not running ({exc}); .ci/run starts it", pytrace=False)
    yield REDIS_URL
    client.flushdb()


@pytest.fixture
def images():
    with LocalHTTPServer() as server:
        yield server


@pytest.fixture
def environment(broker, postgres_url, milvus_target, models_dir, tmp_path):
    """Settings shared by the CLI and the workers, as environment variables (once with a Milvus Lite
    server, once with a Milvus standalone)."""
    migrate.upgrade(DatabaseSettings(url=postgres_url))
    collection_prefix = (
        f"{milvus_target.settings['collection_prefix']}_{tmp_path.name[-8:].replace('-', '_')}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOTHES_SEARCH_")}
    if milvus_target.strong:
        env["CLOTHES_SEARCH_MILVUS__CONSISTENCY"] = "Strong"
    env.update(
        CLOTHES_SEARCH_DATA_DIR=str(tmp_path / "data"),
        CLOTHES_SEARCH_MODELS_DIR=str(models_dir),
        CLOTHES_SEARCH_DATABASE__URL=postgres_url,
        CLOTHES_SEARCH_MILVUS__URI=milvus_target.uri,
        CLOTHES_SEARCH_MILVUS__INDEX_TYPE="FLAT",
        CLOTHES_SEARCH_MILVUS__COLLECTION_PREFIX=collection_prefix,
        CLOTHES_SEARCH_MILVUS__LIVE_ALIAS=f"{collection_prefix}_live",
        CLOTHES_SEARCH_QUEUE__BROKER_URL=broker,
        CLOTHES_SEARCH_QUEUE__INGEST_BATCH_SIZE="8",
        CLOTHES_SEARCH_QUEUE__MAX_ATTEMPTS="2",
        CLOTHES_SEARCH_QUEUE__RETRY_BACKOFF_S="0.2",
        CLOTHES_SEARCH_QUEUE__VISIBILITY_TIMEOUT_S="5",
        CLOTHES_SEARCH_QUEUE__STALE_CLAIM_S="60",
        CLOTHES_SEARCH_FETCH__ALLOWED_NETWORKS='["127.0.0.1/32"]',
        CLOTHES_SEARCH_FETCH__MAX_BYTES="1000000",
        CLOTHES_SEARCH_FETCH__READ_TIMEOUT_S="1",
        CLOTHES_SEARCH_FETCH__TOTAL_TIMEOUT_S="2",
        CLOTHES_SEARCH_DETECTORS='[{"name": "whole", "backend": "whole_image"}]',
        CLOTHES_SEARCH_EMBEDDERS='[{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}]',
        CLOTHES_SEARCH_PIPELINE__TORCH_THREADS="1",
    )
    return env


class Worker:
    """A ``clothes-search worker`` process group that can be killed like a crashed machine."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [CLI, "worker", "-c", "1", "-l", "INFO"],
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def workers(environment, tmp_path):
    started: list[Worker] = []

    def start(env: dict[str, str] | None = None) -> Worker:
        worker = Worker(env or environment, tmp_path / f"worker{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def run_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def write_feed(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def wait_for_job(database: Database, job_id: int, timeout_s: float = 240) -> IngestJob:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with database.session() as session:
            job = session.get(IngestJob, job_id)
            if job.finished_at is not None:
                return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish in {timeout_s}s")


def statuses(database: Database) -> dict[str, tuple[ItemStatus, str | None]]:
    with database.session() as session:
        return {i.sku: (i.status, i.last_error) for i in session.scalars(select(Item))}


def milvus_settings(env: dict[str, str]) -> MilvusSettings:
    return MilvusSettings(
        uri=env["CLOTHES_SEARCH_MILVUS__URI"],
        collection_prefix=env["CLOTHES_SEARCH_MILVUS__COLLECTION_PREFIX"],
    )


def assert_vectors_match_rows(database: Database, env: dict[str, str]) -> int:
    """Every crop row has exactly one vector and vice versa; returns the count."""
    with database.session() as session:
        rows = set(session.scalars(select(Crop.id)))
        collection = session.scalar(select(IndexVersion.collection_name))
    with VectorStore(milvus_settings(env)) as store:
        vectors = [row for batch in store.iter_rows(collection) for row in batch]
    ids = Counter(vid for vid, _, _ in vectors)
    assert all(n == 1 for n in ids.values())
    assert set(ids) == rows
    return len(rows)


def test_feed_with_broken_images_ends_indexed_or_failed_with_reasons(environment, workers, images, tmp_path):
    good = [f"GOOD-{i:02d}" for i in range(50)]
    rows = [
        {"sku": sku, "image_url": images.add(f"/{sku}.jpg", Response(jpeg((i * 5, 100, 255 - i * 5)))),
         "category": "top", "brand": f"brand{i % 3}", "price": 10 + i, "currency": "EUR"}
        for i, sku in enumerate(good)
    ]  # fmt: skip
    truncated = jpeg((1, 2, 3))[:400]
    bad = {
        "B-404": (images.url("/missing.jpg"), "404"),
        "B-TRUNC": (images.add("/trunc.jpg", Response(truncated, content_type="image/jpeg")), "decode_error"),
        "B-HTML": (images.add("/page.jpg", Response(b"<html>hi</html>", content_type="image/jpeg")), "HTML"),
        "B-HUGE": (images.add("/huge.jpg", Response(b"\xff\xd8\xff" + b"0" * 2_000_000)), "too_large"),
        "B-SLOW": (images.add("/slow.jpg", Response(jpeg((9, 9, 9)), chunk_size=64, delay_s=0.5)), "timeout"),
    }
    rows += [{"sku": sku, "image_url": url, "category": "top"} for sku, (url, _) in bad.items()]
    feed = write_feed(tmp_path / "feed.jsonl", rows)
    workers()
    result = run_cli(environment, "ingest", str(feed), "--wait")
    assert result.returncode == 0, result.stderr
    assert "55 queued" in result.stdout

    database = Database(DatabaseSettings(url=environment["CLOTHES_SEARCH_DATABASE__URL"]))
    final = statuses(database)
    assert all(final[sku][0] == ItemStatus.INDEXED for sku in good), {s: final[s] for s in good}
    for sku, (_, reason) in bad.items():
        status, error = final[sku]
        assert status == ItemStatus.FAILED and reason in error, (sku, error)
    assert "gave up after 2 attempts" in final["B-SLOW"][1]
    assert assert_vectors_match_rows(database, environment) == 50
    with database.session() as session:
        job = session.scalar(select(IngestJob))
        assert (job.total, job.done, job.failed, job.embedded) == (55, 50, 5, 50)

    # the same feed again: nothing queued, no model work
    again = run_cli(environment, "ingest", str(feed), "--wait")
    assert again.returncode == 0, again.stderr
    assert "0 queued" in again.stdout and "55 unchanged" in again.stdout
    with database.session() as session:
        assert session.scalar(select(func.count(IngestJob.id))) == 1
    # one price changed: a metadata-only update reaches Milvus without re-embedding
    rows[0]["price"] = 999
    changed = run_cli(environment, "ingest", str(write_feed(tmp_path / "feed2.jsonl", rows)))
    assert "1 metadata-only updates" in changed.stdout and "0 queued" in changed.stdout
    with VectorStore(milvus_settings(environment)) as store, database.session() as session:
        collection = session.scalar(select(IndexVersion.collection_name))
        assert store.item_fields(collection, [good[0]])[good[0]].price == 999
    assert assert_vectors_match_rows(database, environment) == 50
    database.dispose()


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(environment, workers, images, tmp_path):
    gate = threading.Event()  # images after the first two batches are served only once it opens

    def gated(body: bytes):
        def serve(handler) -> None:
            gate.wait(120)
            handler._write(Response(body, content_type="image/jpeg"))

        return serve

    skus = [f"K-{i:02d}" for i in range(40)]
    rows = [
        {"sku": sku, "category": "top",
         "image_url": images.add(f"/{sku}.jpg", Response(jpeg((i * 6, 50, 200))) if i < 16
                                 else gated(jpeg((i * 6, 50, 200))))}
        for i, sku in enumerate(skus)
    ]  # fmt: skip
    feed = write_feed(tmp_path / "feed.jsonl", rows)
    database = Database(DatabaseSettings(url=environment["CLOTHES_SEARCH_DATABASE__URL"]))
    first = workers()
    submitted = run_cli(environment, "ingest", str(feed), "--no-wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout.split("job ")[1].split()[0])

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait until the worker is part-way through the feed
        counts = Counter(status for status, _ in statuses(database).values())
        if counts[ItemStatus.INDEXED] >= 8 and counts[ItemStatus.PROCESSING] > 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the worker never got part-way: {counts}")
    first.kill()
    gate.set()
    stuck = [sku for sku, (status, _) in statuses(database).items() if status != ItemStatus.INDEXED]
    assert stuck, "killed after everything was done: the test proves nothing"

    workers()  # a fresh worker picks up the unacknowledged batches
    job = wait_for_job(database, job_id)
    final = statuses(database)
    assert all(status == ItemStatus.INDEXED for status, _ in final.values()), final
    assert (job.done, job.failed) == (40, 0)
    assert assert_vectors_match_rows(database, environment) == 40
    database.dispose()


def test_the_worker_schedule_requeues_items_whose_worker_vanished(environment, workers, images, tmp_path):
    """Items left ``processing`` by a worker that died (no task of theirs left in any queue) are swept
    back by the schedule ``clothes-search worker`` runs (beat), with nobody following the job."""
    from datetime import timedelta

    from db.models import utcnow
    from ingestion.feed import parse_records
    from workers.submit import submit_rows

    environment = {**environment, "CLOTHES_SEARCH_QUEUE__STALE_CLAIM_S": "3"}
    database = Database(DatabaseSettings(url=environment["CLOTHES_SEARCH_DATABASE__URL"]))
    rows = [
        {"sku": f"S-{i}", "image_url": images.add(f"/s{i}.jpg", Response(jpeg((i * 40, 9, 99))))}
        for i in range(3)
    ]
    parsed = [row for _, row in parse_records(rows).rows]
    submitted = submit_rows(database, None, parsed, source="test", trusted=True)  # a feed: any port
    with database.session() as session:  # claimed long ago by a worker that is gone
        for item in session.scalars(select(Item)):
            item.status, item.claim_token = ItemStatus.PROCESSING, "dead-worker"
            item.claimed_at = utcnow() - timedelta(hours=1)
    workers(environment)  # nothing is sent to the queue: only the worker's schedule can find them
    job = wait_for_job(database, submitted.job_id)
    assert (job.done, job.failed) == (3, 0)
    assert all(status == ItemStatus.INDEXED for status, _ in statuses(database).values())
    database.dispose()


def test_one_row_the_vector_store_refuses_fails_alone_with_celery_workers(
    environment, workers, images, tmp_path
):
    """The Celery mode of the in-process test in test_ingest_robustness.py: 31 indexed, 1 failed with
    its reason, nothing left processing."""
    environment = {**environment, "CLOTHES_SEARCH_MILVUS__ATTRIBUTE_FIELDS": '{"size": "int"}'}
    rows = [
        {"sku": f"V-{i:02d}", "image_url": images.add(f"/v{i}.jpg", Response(jpeg((i * 7, 30, 90)))),
         "attributes": {"size": "XL" if i == 5 else 36 + i % 6}}
        for i in range(32)
    ]  # fmt: skip
    environment["CLOTHES_SEARCH_QUEUE__INGEST_BATCH_SIZE"] = "32"  # one batch: the bad row among 31 good
    workers(environment)
    result = run_cli(environment, "ingest", str(write_feed(tmp_path / "feed.jsonl", rows)), "--wait")
    assert result.returncode == 0, result.stderr
    database = Database(DatabaseSettings(url=environment["CLOTHES_SEARCH_DATABASE__URL"]))
    final = statuses(database)
    assert sum(status == ItemStatus.INDEXED for status, _ in final.values()) == 31
    assert final["V-05"][0] == ItemStatus.FAILED and "attributes.size: declared int" in final["V-05"][1]
    assert not [sku for sku, (status, _) in final.items() if status == ItemStatus.PROCESSING]
    database.dispose()


def test_index_build_fills_a_new_version_on_the_workers_admin_queue(environment, workers, images, tmp_path):
    skus = [f"R-{i:02d}" for i in range(10)]
    rows = [
        {"sku": sku, "image_url": images.add(f"/{sku}.jpg", Response(jpeg((20 * i, 90, 200 - 15 * i)))),
         "category": "top"}
        for i, sku in enumerate(skus)
    ]  # fmt: skip
    workers()
    assert (
        run_cli(environment, "ingest", str(write_feed(tmp_path / "feed.jsonl", rows)), "--wait").returncode
        == 0
    )
    models = tmp_path / "new.toml"  # the same network at another input size: other vectors, another version
    models.write_text(
        '[[detectors]]\nname = "whole"\nbackend = "whole_image"\n\n'
        '[[embedders]]\nname = "lite0s"\nbackend = "efficientnet_lite"\nmodel = "lite0"\nimage_size = 192\n'
    )
    built = run_cli(environment, "index", "build", "--config", str(models), "--in-flight", "1")
    assert built.returncode == 0, built.stdout + built.stderr
    report = json.loads(built.stdout)
    assert report["embedded"] == 10 and report["complete"], report
    assert "clothes_search.reindex_batch" in (tmp_path / "worker0.log").read_text()  # the workers did it
    status = json.loads(run_cli(environment, "index", "status", "--json").stdout)["versions"]
    assert [(v["state"], v["items_held"], v["vectors"]) for v in status] == [
        ("live", 10, 10),
        ("building", 10, 10),
    ]
