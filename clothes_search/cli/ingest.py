"""``clothes-search ingest FEED`` and ``clothes-search worker``: the catalog ingestion queue."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import click
from tqdm import tqdm

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from clothes_search.services import Services
from db import migrate
from ingestion.feed import parse_feed
from workers.dispatch import Dispatcher, make_dispatcher
from workers.submit import job_progress, submit_rows


def _require_schema(services: Services) -> None:
    current = migrate.current_revision(services.settings.database)
    head = migrate.head_revision()
    if current != head:
        raise click.ClickException(
            f"the database is at revision {current or 'base'}, not {head}: run `clothes-search db upgrade`"
        )


@click.command()
@click.argument("feed", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--wait/--no-wait", default=None, help="Show progress until done [default: wait when in-process]."
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Queue every row, even unchanged ones (unchanged images still skip the models).",
)
@click.option("--retry-failed", is_flag=True, help="Queue items that failed before, even if unchanged.")
@click.option("--created-by", default="cli", show_default=True)
@pass_cli
def ingest(
    cli: CliContext, feed: Path, wait: bool | None, refresh: bool, retry_failed: bool, created_by: str
) -> None:
    """Upsert a JSONL / CSV / JSON catalog FEED and ingest the items that need it.

    Bad rows are reported with their line number and skipped. Metadata-only changes (price,
    stock...) update the database and Milvus without re-embedding. Without a broker
    (queue.broker_url) the items are processed here; with one, workers do it and --wait
    follows the job.
    """
    settings = cli.settings
    services = Services(settings)
    try:
        _require_schema(services)
        parsed = parse_feed(feed)
        for error in parsed.errors:
            click.echo(f"{feed}:{error.line}: {error.sku or '?'}: {error.reason}", err=True)
        if parsed.errors_dropped:
            click.echo(f"... and {parsed.errors_dropped} more bad rows", err=True)
        services.target_version_id()  # the collection exists before metadata is synced to it
        rows = [row for _, row in parsed.rows]
        result = submit_rows(
            services.database,
            services.store,
            rows,
            source=str(feed),
            created_by=created_by,
            refresh=refresh,
            retry_failed=retry_failed,
            trusted=True,  # a feed given on this machine: its local images (in its folder) may be read
            local_root=feed.absolute().parent,
        )
        click.echo(
            f"{len(parsed.rows)} rows ok, {parsed.error_count} rejected; {len(result.queued)} queued, "
            f"{len(result.metadata_updated)} metadata-only updates, {len(result.unchanged)} unchanged"
        )
        if result.job_id is None:
            return
        click.echo(f"job {result.job_id}")
        in_process = not settings.queue.broker_url
        bar = tqdm(
            total=len(result.queued), unit="item", desc="ingest", disable=not in_process or wait is False
        )
        dispatcher = make_dispatcher(
            services, on_batch=lambda o: bar.update(len(o.indexed) + len(o.unchanged) + len(o.failed))
        )
        try:
            dispatcher.submit(result.queued, result.job_id)  # in-process: runs the batches here
            bar.close()
            if wait and not in_process:
                _follow(services, dispatcher, result.job_id)
        finally:
            dispatcher.close()
        _report(services, result.job_id)
    except ClothesSearchError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    finally:
        services.close()


def _follow(services: Services, dispatcher: Dispatcher, job_id: int, poll_s: float = 1.0) -> None:
    progress = job_progress(services.database, job_id)
    assert progress is not None
    bar = tqdm(total=progress.total, unit="item", desc=f"job {job_id}")
    last_requeue = time.monotonic()
    while True:
        progress = job_progress(services.database, job_id)
        assert progress is not None
        bar.n = progress.done + progress.failed
        bar.set_postfix(indexed=progress.done, failed=progress.failed, refresh=False)
        bar.refresh()
        if progress.remaining == 0:
            break
        if time.monotonic() - last_requeue > services.settings.queue.stale_claim_s / 2:
            dispatcher.requeue_stale()  # a worker died holding items: queue them again
            last_requeue = time.monotonic()
        time.sleep(poll_s)
    bar.close()


def _report(services: Services, job_id: int) -> None:
    progress = job_progress(services.database, job_id)
    if progress is None:
        return
    click.echo(
        f"job {job_id}: {progress.done} indexed ({progress.embedded} embedded, "
        f"{progress.unchanged} unchanged), {progress.failed} failed, {progress.remaining} remaining"
    )
    for sku, reason in progress.failures[:50]:
        click.echo(f"  failed {sku}: {reason}", err=True)


@click.command()
@click.option(
    "--queues", "-Q", default="ingest,index,admin", show_default=True, help="Comma-separated queues."
)
@click.option("--concurrency", "-c", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--pool", default="prefork", show_default=True, help="prefork | solo | threads")
@click.option(
    "--beat/--no-beat",
    default=True,
    show_default=True,
    help="Also run the schedule that re-queues stale claims (every queue.stale_claim_s / 2). "
    "With several workers, --no-beat on all but one (an extra sweep is harmless, only wasted).",
)
@pass_cli
def worker(cli: CliContext, queues: str, concurrency: int, loglevel: str, pool: str, beat: bool) -> None:
    """Start a Celery worker for the project's queues (needs queue.broker_url)."""
    settings = cli.settings
    if not settings.queue.broker_url:
        raise click.ClickException(
            "set queue.broker_url (e.g. CLOTHES_SEARCH_QUEUE__BROKER_URL=redis://127.0.0.1:6379/0)"
        )
    from workers.celery_app import create_celery

    app = create_celery(settings)
    if beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule state there
    name = f"clothes-search-{uuid.uuid4().hex[:6]}@%h"
    app.worker_main(
        [
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-l",
            loglevel,
            "-P",
            pool,
            "-n",
            name,
            "--without-gossip",
            *(["--beat"] if beat else []),
        ]
    )
