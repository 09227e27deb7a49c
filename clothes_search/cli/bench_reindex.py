"""``clothes-search bench reindex``: what an admin re-index costs, on a Milvus server.

1. ingests N items (distinct photos, a trusted local feed) in this process: the plain ingestion rate;
2. times ``POST /similar`` (the WSGI app in this process, its models warm, one request at a time)
   with nothing else running;
3. runs ``clothes-search index build`` with other models in a child process (at its default CPU
   priority: niced), and times ``/similar`` again while it runs: the re-index rate and the latency
   a rebuild costs the live API.

Everything lives in a temporary folder and temporary collections (dropped after).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click
import numpy as np

from clothes_search.cli.bench_ingest import PHOTOS, _images
from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.services import Services
from clothes_search.settings import ENV_PREFIX, Settings
from db import migrate
from ingestion.feed import parse_feed
from workers.dispatch import make_dispatcher
from workers.submit import submit_rows

DEFAULT_NEW_MODELS = """
[[embedders]]
name = "effnet_lite1"
backend = "efficientnet_lite"
model = "lite1"
"""


def _percentiles(values: list[float]) -> str:
    return f"{np.percentile(values, 50):.0f} / {np.percentile(values, 95):.0f}" if values else "-"


def _environment(settings: Settings) -> dict[str, str]:
    """This process's environment with the benchmark's database and Milvus for a child command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env[f"{ENV_PREFIX}DATABASE__URL"] = settings.database.url
    env[f"{ENV_PREFIX}DATA_DIR"] = str(settings.data_dir)
    env[f"{ENV_PREFIX}MODELS_DIR"] = str(settings.models_dir)
    for key in ("uri", "collection_prefix", "live_alias"):
        env[f"{ENV_PREFIX}MILVUS__{key.upper()}"] = str(getattr(settings.milvus, key))
    env[f"{ENV_PREFIX}FETCH__LOCAL_ROOTS"] = json.dumps([str(settings.data_dir)])
    return env


@click.command("reindex")
@click.option("--uri", required=True, help="A Milvus server (`clothes-search milvus serve` or standalone).")
@click.option("--count", default=60, show_default=True, help="Catalog items.")
@click.option("--queries", default=40, show_default=True, help="/similar requests without a rebuild.")
@click.option(
    "--models",
    "models_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The rebuild's models (a config file) [EfficientNet-Lite1 with the configured detectors].",
)
@click.option(
    "--nice", default=10, show_default=True, help="The rebuild's CPU priority (index build --nice)."
)
@pass_cli
def bench_reindex(
    cli: CliContext, uri: str, count: int, queries: int, models_file: Path | None, nice: int
) -> None:
    """Plain ingestion vs re-index rate, and /similar p50 / p95 (ms) without and during a rebuild."""
    from search.app import create_app

    workdir = Path(tempfile.mkdtemp(prefix="cs-bench-reindex-"))
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    settings = Settings.load(
        cli.config_file,
        data_dir=workdir,
        models_dir=cli.settings.models_dir,
        database={"url": f"sqlite:///{workdir / 'catalog.db'}"},
        milvus={**cli.settings.milvus.model_dump(), "uri": uri, "collection_prefix": prefix,
                "live_alias": f"{prefix}_live"},
        api={"search_rate_limit": "1000000/minute"},
    )  # fmt: skip
    services = Services(settings)
    app = None
    try:
        migrate.upgrade(settings.database)
        feed = workdir / "feed.jsonl"
        with feed.open("w") as out:
            for i, data in enumerate(_images(count)):
                path = workdir / f"{i:05d}.jpg"
                path.write_bytes(data)
                out.write(
                    json.dumps({"sku": f"sku-{i:05d}", "image_path": path.name, "title": f"item {i}"}) + "\n"
                )
        rows = [row for _, row in parse_feed(feed).rows]
        services.pipeline.load()
        services.target_version_id()
        started = time.perf_counter()
        submitted = submit_rows(
            services.database, services.store, rows, source=str(feed), trusted=True, local_root=workdir
        )
        make_dispatcher(services).submit(submitted.queued, submitted.job_id)
        ingest_rate = count / (time.perf_counter() - started)
        click.echo(f"ingested {count} items at {ingest_rate:.2f} items/s", err=True)

        app = create_app(settings)
        client = app.test_client()
        photos = [Path(p).read_bytes() for p in PHOTOS if Path(p).is_file()]

        def ask(n: int) -> float:
            start = time.perf_counter()
            reply = client.post(
                "/similar?k=20&rerank=none", data=photos[n % len(photos)], content_type="image/jpeg"
            )
            if reply.status_code != 200:
                raise click.ClickException(
                    f"/similar: HTTP {reply.status_code}: {reply.get_data(as_text=True)}"
                )
            return (time.perf_counter() - start) * 1000

        ask(0)  # warm-up
        idle = [ask(n) for n in range(queries)]
        models = models_file or workdir / "new-models.toml"
        if models_file is None:
            models.write_text(DEFAULT_NEW_MODELS)
        cli_path = Path(sys.executable).with_name("clothes-search")
        build = subprocess.Popen(
            [str(cli_path), "index", "build", "--config", str(models), "--nice", str(nice)],
            env=_environment(settings), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        during: list[float] = []
        n = 0
        while build.poll() is None:
            during.append(ask(n))
            n += 1
        out, _ = build.communicate()
        if build.returncode != 0:
            raise click.ClickException(f"index build failed ({build.returncode}): {out}")
        report = json.loads(out)
    finally:
        if app is not None:
            from search.api_services import ApiServices

            ApiServices.of(app).close()
        _drop(services)
        services.close()
        shutil.rmtree(workdir, ignore_errors=True)
    click.echo(f"{count} items, {os.cpu_count()} CPUs, Milvus {uri}, rebuild at nice {nice}")
    click.echo("| measure | value |\n|---|---:|")
    click.echo(f"| plain ingestion (in-process, configured models) | {ingest_rate:.2f} items/s |")
    click.echo(f"| re-index into the new version (index build) | {report['items_per_s']:.2f} items/s |")
    click.echo(
        f"| /similar p50 / p95 ms, nothing else running ({len(idle)} requests) | {_percentiles(idle)} |"
    )
    click.echo(
        f"| /similar p50 / p95 ms, during the rebuild ({len(during)} requests) | {_percentiles(during)} |"
    )


def _drop(services: Services) -> None:
    """Remove the benchmark's collections and alias from the server."""
    store = services.store
    store.drop_alias(store.settings.live_alias)
    for name in store.list_collections():
        if name.startswith(store.settings.collection_prefix + "_"):
            store.drop_collection(name)
