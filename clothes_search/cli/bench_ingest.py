"""``clothes-search bench ingest``: ingestion throughput, three ways, on the same images and models.

(a) pure model compute: ``Pipeline.analyse`` on decoded images in memory (no I/O);
(b) end to end through the real queue: Redis, ``clothes-search worker`` processes, a Milvus
    Lite server and the metadata database, images fetched over HTTP from a local server;
(c) naive, one item at a time: fetch, run, write each item on its own (as the Milvus bootcamp
    ingests).
Everything runs in a temporary directory; the broker's Redis database is flushed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
from PIL import Image, ImageOps

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.services import Services
from clothes_search.settings import Settings
from db import migrate
from db.indexing import ItemCrops, index_items
from db.models import IngestJob, Item
from ingestion.feed import parse_feed
from ingestion.images import load_image
from ingestion.pipeline import Pipeline
from workers.dispatch import CeleryDispatcher
from workers.ingest import crops_of
from workers.submit import submit_rows

PHOTOS = (
    "tests/data/astronaut.jpg",
    "/usr/share/doc/opencv-doc/examples/data/messi5.jpg",
    "/usr/share/doc/opencv-doc/examples/data/basketball1.png",
)


def _images(count: int) -> list[bytes]:
    """``count`` distinct JPEGs: the sample photos, mirrored, cropped and rescaled in turn."""
    bases = [Image.open(p).convert("RGB") for p in PHOTOS if Path(p).is_file()]
    out = []
    for i in range(count):
        image = bases[i % len(bases)]
        w, h = image.size
        dx, dy = (i * 7) % (w // 10), (i * 5) % (h // 10)
        variant = image.crop((dx, dy, w - (i % 3) * 5, h)).resize((int(w * 0.9), int(h * 0.9)))
        if i % 2:
            variant = ImageOps.mirror(variant)
        buffer = io.BytesIO()
        variant.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


class _ImageServer:
    def __init__(self, images: list[bytes]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index = int(self.path.strip("/").split(".")[0])
                body = images[index]
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/{index}.jpg"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_jobs(services: Services, job_id: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with services.database.session() as session:
            if session.get(IngestJob, job_id).finished_at is not None:
                return
        time.sleep(0.2)
    raise click.ClickException(f"job {job_id} did not finish within {timeout_s:.0f}s")


def _submit(services: Services, dispatcher: CeleryDispatcher, feed: Path) -> int:
    """What ``clothes-search ingest --no-wait`` does, minus the command's start-up."""
    rows = [row for _, row in parse_feed(feed).rows]
    result = submit_rows(services.database, services.store, rows, source=str(feed), trusted=True)
    assert result.job_id is not None
    dispatcher.submit(result.queued, result.job_id)
    return result.job_id


def _feed(path: Path, server: _ImageServer, indices: range, prefix: str) -> Path:
    lines = (json.dumps({"sku": f"{prefix}{i}", "image_url": server.url(i)}) + "\n" for i in indices)
    path.write_text("".join(lines))
    return path


@click.command("ingest")
@click.option("--count", default=96, show_default=True, help="Items per measurement.")
@click.option(
    "--broker", default="redis://127.0.0.1:6379/15", show_default=True, help="Redis for (b); flushed."
)
@click.option("--concurrency", default=2, show_default=True, help="Worker processes for (b).")
@click.option("--batch-size", default=16, show_default=True, help="Items per ingest task / compute batch.")
@pass_cli
def bench_ingest(cli: CliContext, count: int, broker: str, concurrency: int, batch_size: int) -> None:
    """Compare pure compute (a), the real queue end to end (b) and one-at-a-time ingestion (c)."""
    import redis

    images = _images(count)
    server = _ImageServer(images)
    workdir = Path(tempfile.mkdtemp(prefix="cs-bench-ingest-"))
    port = _free_port()
    lite = subprocess.Popen(
        [str(Path(sys.executable).with_name("milvus-lite")), "server", "--data-dir", str(workdir / "milvus"),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    overrides = {
        "database": {"url": f"sqlite:///{workdir / 'catalog.db'}"},
        "milvus": {"uri": f"http://127.0.0.1:{port}", "index_type": "HNSW"},
        "queue": {"broker_url": broker, "ingest_batch_size": batch_size},
        "fetch": {"allowed_networks": ["127.0.0.1/32"]},
        "pipeline": {"batch_size": batch_size},
    }
    settings = Settings.load(cli.config_file, **overrides)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOTHES_SEARCH_")}
    if cli.config_file:
        env["CLOTHES_SEARCH_CONFIG"] = str(cli.config_file)
    env.update(
        CLOTHES_SEARCH_MODELS_DIR=str(settings.models_dir.absolute()),
        CLOTHES_SEARCH_DATABASE__URL=settings.database.url,
        CLOTHES_SEARCH_MILVUS__URI=settings.milvus.uri,
        CLOTHES_SEARCH_QUEUE__BROKER_URL=broker,
        CLOTHES_SEARCH_QUEUE__INGEST_BATCH_SIZE=str(batch_size),
        CLOTHES_SEARCH_FETCH__ALLOWED_NETWORKS='["127.0.0.1/32"]',
        CLOTHES_SEARCH_PIPELINE__BATCH_SIZE=str(batch_size),
        CLOTHES_SEARCH_PIPELINE__TORCH_THREADS=str(max(1, (os.cpu_count() or 1) // concurrency)),
    )
    redis.Redis.from_url(broker).flushdb()
    migrate.upgrade(settings.database)
    worker = None
    rows: list[tuple[str, int, float]] = []
    try:
        # (a) pure compute on decoded images
        pipeline = Pipeline(settings).load()
        decoded = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
        pipeline.analyse(decoded[:4])
        start = time.perf_counter()
        pipeline.analyse(decoded)
        rows.append(("(a) model compute only, in memory", count, time.perf_counter() - start))

        # (b) the real queue: warm the workers up (model loading) on a few items, then measure
        command = [str(Path(sys.executable).with_name("clothes-search")), "worker", "-c", str(concurrency)]
        worker = subprocess.Popen(
            [*command, "-l", "WARNING"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        services = Services(settings)
        services.target_version_id()
        dispatcher = CeleryDispatcher(services)
        warm_feed = _feed(workdir / "warm.jsonl", server, range(min(4 * concurrency, count)), "warm-")
        _wait_for_jobs(services, _submit(services, dispatcher, warm_feed), 600)
        feed = _feed(workdir / "feed.jsonl", server, range(count), "item-")
        start = time.perf_counter()
        job = _submit(services, dispatcher, feed)
        _wait_for_jobs(services, job, 3600)
        rows.append(
            (f"(b) queue end to end, {concurrency} worker processes", count, time.perf_counter() - start)
        )

        # (c) naive: fetch, run and write each item on its own
        version_id = services.target_version_id()
        with services.database.session() as session:
            session.add_all(Item(sku=f"naive-{i}", image_url=server.url(i)) for i in range(count))
        start = time.perf_counter()
        for i in range(count):
            loaded = load_image(server.url(i), settings.fetch)
            [analysis] = pipeline.analyse([loaded.image])
            entry = ItemCrops(f"naive-{i}", loaded.content_sha256, crops_of(analysis))
            index_items(services.database, services.store, version_id, [entry])
        rows.append(("(c) naive, one item at a time", count, time.perf_counter() - start))
        services.close()
    finally:
        if worker is not None:
            os.killpg(worker.pid, 15)
            worker.wait(timeout=60)
        lite.terminate()
        lite.wait(timeout=60)
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)

    compute_rate = rows[0][1] / rows[0][2]
    signature = pipeline.signature.hash
    click.echo(f"{count} distinct photos, signature {signature}, batch {batch_size}, {os.cpu_count()} CPUs")
    click.echo("| mode                                        | items | seconds | items/s | vs (a) |")
    click.echo("|---------------------------------------------|-------|---------|---------|--------|")
    for name, items, seconds in rows:
        rate = items / seconds
        click.echo(
            f"| {name:<43} | {items:>5} | {seconds:>7.1f} | {rate:>7.2f} | {rate / compute_rate:>5.2f}x |"
        )
