"""``clothes-search bench similar``: ``/similar`` latency by stage at a given index size.

Builds a temporary index of N synthetic crops (clustered unit vectors of the configured model
signature's dimension, with realistic item metadata in SQLite, in a fresh Milvus Lite file or, with
``--uri``, in temporary collections of a Milvus server; ``--keep DIR`` keeps it for the next run),
then sends real query photos to ``POST /similar`` through the WSGI app in this process (no socket)
and prints p50 / p95 of the whole request and of each stage, with and without re-ranking and
filters, and the share of the p50 spent outside detection and embedding.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import click
import numpy as np
from sqlalchemy import func, insert, select

from clothes_search.cli.bench_milvus import wait_for_idle
from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.services import Services
from clothes_search.settings import Settings
from db import migrate
from db.index_versions import activate, ensure_index_version
from db.models import Crop, Item, ItemStatus
from db.vectors import CropRecord, ItemFields

PHOTOS = (
    "tests/data/astronaut.jpg",
    "/usr/share/doc/opencv-doc/examples/data/messi5.jpg",
    "/usr/share/doc/opencv-doc/examples/data/basketball1.png",
)
CATEGORIES = [f"cat{i}" for i in range(10)]
BRANDS = [f"brand{i}" for i in range(50)]
MODES = (
    ("no filter, no re-rank", "rerank=none"),
    ("no filter, k-reciprocal", "rerank=k_reciprocal"),
    ("category + price, k-reciprocal", "rerank=k_reciprocal&category=cat3&price_min=20&price_max=80"),
    ("brand + in_stock, no re-rank", "rerank=none&brand=brand7&in_stock=true"),
)
STAGES = ("decode", "detect", "embed", "ann", "rerank", "db")


def _fill(services: Services, count: int, batch: int, seed: int = 0) -> None:
    """N items with one crop each: metadata rows, crop rows and clustered unit vectors."""
    rng = np.random.default_rng(seed)
    signature = services.pipeline.signature
    version_id = services.target_version_id()
    dim = signature.dim
    centres = rng.normal(size=(64, dim)).astype(np.float32)
    collection = services.store.collection_name(signature.hash)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        ids = np.arange(start + 1, start + n + 1)
        cats = [CATEGORIES[i % len(CATEGORIES)] for i in ids]
        brands = [BRANDS[i % len(BRANDS)] for i in ids]
        prices = [float(5 + (i * 7) % 120) for i in ids]
        stock = [bool(i % 3) for i in ids]
        with services.database.session() as session:
            session.execute(
                insert(Item),
                [
                    {"id": int(i), "sku": f"sku-{i}", "category": c, "brand": b, "price": Decimal(f"{p:.2f}"),
                     "in_stock": s, "status": ItemStatus.INDEXED, "sizes": [], "attributes": {}}
                    for i, c, b, p, s in zip(ids, cats, brands, prices, stock, strict=True)
                ],
            )  # fmt: skip
            session.execute(
                insert(Crop),
                [
                    {"id": int(i), "item_id": int(i), "index_version_id": version_id, "x1": 0.0, "y1": 0.0,
                     "x2": 100.0, "y2": 100.0, "category": "top", "score": 1.0, "detectors": [],
                     "signature": signature.hash}
                    for i in ids
                ],
            )  # fmt: skip
        noise = rng.normal(scale=0.6, size=(n, dim)).astype(np.float32)
        vectors = centres[rng.integers(0, len(centres), n)] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [
            CropRecord(int(i), v, f"sku-{i}", "top", ItemFields(c, b, p, s, {}))
            for i, v, c, b, p, s in zip(ids, vectors, cats, brands, prices, stock, strict=True)
        ]
        services.store.upsert(collection, records)
    services.store.flush(collection)
    services.store.load(collection)


def _build(services: Services, count: int, batch: int) -> None:
    """A fresh live index of ``count`` synthetic crops, searchable from its built vector index."""
    with services.database.session() as session:
        if session.scalar(select(func.count()).select_from(Item)):
            raise click.ClickException(
                f"{services.settings.database.url} holds another benchmark's items: remove its folder"
            )
        version = ensure_index_version(
            session, services.store, signature=services.pipeline.signature.hash,
            dimension=services.pipeline.signature.dim,
        )  # fmt: skip
        activate(session, services.store, version)
    _fill(services, count, batch)
    _wait_until_searchable(services)
    with services.database.session() as session:
        assert session.scalar(select(Item.id).where(Item.sku == "sku-1")) is not None


def _kept_index(services: Services, count: int) -> bool:
    """Whether a kept folder already holds the live index of ``count`` crops (built by an earlier run)."""
    with services.database.session() as session:
        items = session.scalar(select(func.count()).select_from(Item))
    if not items:
        return False
    collection = services.store.collection_name(services.pipeline.signature.hash)
    if items != count or not services.store.has_collection(collection):
        raise click.ClickException(
            f"{services.settings.database.url}: an incomplete index; remove its folder"
        )
    services.store.load(collection)
    return True


def _wait_until_searchable(services: Services) -> None:
    store = services.store
    if store.is_local:
        wait_for_idle()  # Milvus Lite builds indexes in the background after loading
        return
    collection = store.collection_name(services.pipeline.signature.hash)
    store.wait_until_indexed(collection)
    store.release(collection)  # reload: every segment then serves from its built index
    store.load(collection)


def _drop(services: Services) -> None:
    """Remove the benchmark's collection (and its alias) from a server."""
    store = services.store
    collection = store.collection_name(services.pipeline.signature.hash)
    store.drop_alias(store.settings.live_alias)
    store.drop_collection(collection)


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.percentile(values, 50):.0f} / {np.percentile(values, 95):.0f}"


@click.command("similar")
@click.option("--count", "counts", multiple=True, type=int, default=(10_000,), show_default=True)
@click.option("--queries", default=30, show_default=True, help="Requests per mode.")
@click.option("--batch", default=2000, show_default=True, help="Rows per insert.")
@click.option("--uri", help="A Milvus server (temporary collections, dropped after) instead of Milvus Lite.")
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep each size's index in this folder (SQLite, and the Lite file or the server's collections) "
    "and reuse it on the next run with the same folder, instead of building it again.",
)
@pass_cli
def bench_similar(
    cli: CliContext, counts: tuple[int, ...], queries: int, batch: int, uri: str | None, keep: Path | None
) -> None:
    """p50 / p95 latency (ms) of POST /similar, whole and per stage, at each index size."""
    from search.api_services import ApiServices
    from search.app import create_app

    photos = [Path(p).read_bytes() for p in PHOTOS if Path(p).is_file()]
    click.echo(f"{len(photos)} query photos, {queries} requests per mode, p50 / p95 in ms")
    header = "| crops | mode | total | " + " | ".join(STAGES) + " | outside models |"
    lines = [header, "|" + "---|" * (4 + len(STAGES))]
    for count in counts:
        workdir = keep / f"crops-{count}" if keep else Path(tempfile.mkdtemp(prefix="cs-bench-similar-"))
        workdir.mkdir(parents=True, exist_ok=True)
        # a kept index has a name of its own on a server, so that two folders never share one
        tag = hashlib.sha1(str(workdir.resolve()).encode()).hexdigest()[:8] if keep else uuid.uuid4().hex[:8]
        prefix = f"bench_{tag}"
        milvus = {
            **cli.settings.milvus.model_dump(),
            "uri": uri or str(workdir / "milvus.db"),
            "collection_prefix": prefix,
            "live_alias": f"{prefix}_live",
        }
        try:
            settings = Settings.load(
                cli.config_file,
                database={"url": f"sqlite:///{workdir / 'catalog.db'}"},
                milvus=milvus,
                api={"search_rate_limit": "1000000/minute"},  # latency, not the limits, is measured
            )
            migrate.upgrade(settings.database)
            app = create_app(settings)
            services = ApiServices.of(app).services
            started = time.perf_counter()
            if _kept_index(services, count):
                click.echo(f"reusing the {count} crops kept in {workdir}", err=True)
            else:
                _build(services, count, batch)
                click.echo(f"{count} crops indexed in {time.perf_counter() - started:.0f}s", err=True)
            client = app.test_client()
            client.post("/similar?rerank=none", data=photos[0], content_type="image/jpeg")  # warm-up
            for name, params in MODES:
                totals: list[float] = []
                outside: list[float] = []
                stages: dict[str, list[float]] = {s: [] for s in STAGES}
                for q in range(queries):
                    start = time.perf_counter()
                    photo = photos[q % len(photos)]
                    reply = client.post(f"/similar?k=20&{params}", data=photo, content_type="image/jpeg")
                    totals.append((time.perf_counter() - start) * 1000)
                    if reply.status_code != 200:
                        detail = reply.get_data(as_text=True)
                        raise click.ClickException(f"{name}: HTTP {reply.status_code}: {detail}")
                    timings = reply.get_json()["timings_ms"]
                    for stage, ms in timings.items():
                        stages.setdefault(stage, []).append(ms)
                    outside.append(totals[-1] - timings.get("detect", 0.0) - timings.get("embed", 0.0))
                cells = " | ".join(_percentiles(stages[s]) for s in STAGES)
                share = np.percentile(outside, 50) / np.percentile(totals, 50)
                lines.append(
                    f"| {count} | {name} | {_percentiles(totals)} | {cells} "
                    f"| {np.percentile(outside, 50):.0f} ms = {share:.0%} |"
                )
            if uri and not keep:
                _drop(services)
            ApiServices.of(app).close()
        finally:
            if not keep:
                shutil.rmtree(workdir, ignore_errors=True)
    click.echo("\n".join(lines))
