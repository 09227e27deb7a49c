"""``clothes-search index build | activate | drop | gc``: new models without downtime.

``index build [--config NEW.toml]`` creates (or resumes) the index version of NEW.toml's models and
embeds every catalog item from the database into it, beside the live one, while the API serves and
ingestion goes on (ingestion writes to the version being built too). ``index activate`` switches the
API to it once every API process has loaded its models; ``index activate PREVIOUS`` rolls back while
the previous version is retained; ``index drop`` / ``index gc`` remove versions no longer needed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from tqdm import tqdm

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from clothes_search.services import Services
from clothes_search.settings import ConfigError, Settings
from db.index_versions import items_to_build, version_progress
from db.models import IndexVersion
from db.version_lifecycle import activate_when_ready, collect_garbage, drop_version
from ingestion.model_sets import ModelSet
from workers.reindex import BuildPace, ReindexOutcome, run_build


def _models_from(cli: CliContext, config: Path | None) -> Settings:
    """The main settings running the models ``config`` names (the file alone, without the environment's
    model settings); the connections, runtime and everything else stay the main settings'."""
    if config is None:
        return cli.settings
    try:
        other = Settings.load(config, environment=False)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    return ModelSet.of(other).applied_to(cli.settings)


@click.command()
@click.option(
    "--config",
    "models_config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A config file whose models (detectors, fusion, embedders) to build with [the main settings'].",
)
@click.option(
    "--max-rate", type=float, default=0.0, show_default=True, help="Items per second (0: no limit)."
)
@click.option(
    "--in-flight",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Batches on the workers at once.",
)
@click.option(
    "--nice",
    type=click.IntRange(min=0, max=19),
    default=10,
    show_default=True,
    help="CPU priority of an in-process build (higher: the API's requests come first).",
)
@click.option("--activate", "make_live", is_flag=True, help="Make it live when complete.")
@pass_cli
def build(
    cli: CliContext, models_config: Path | None, max_rate: float, in_flight: int, nice: int, make_live: bool
) -> None:
    """Create or resume the index version of the configured models and embed the catalog into it."""
    settings = _models_from(cli, models_config)
    services = Services(settings)
    try:
        signature = services.pipeline.signature
        with services.database.session() as session:
            version = services.configured_version(session)
            version_id, collection, state = version.id, version.collection_name, version.state
            before = version_progress(session, version)
            skus = items_to_build(session, version_id)
        click.echo(
            f"{collection} ({state}): {signature.description}\n"
            f"{before.held} of {before.total} items held already; embedding {len(skus)}",
            err=True,
        )
        started = time.monotonic()
        total = _run(services, version_id, skus, BuildPace(max_rate, in_flight, nice))
        seconds = time.monotonic() - started
        with services.database.session() as session:
            after = version_progress(session, session.get(IndexVersion, version_id))
        report = {
            "collection": collection,
            "held_before": before.held,
            "embedded": len(total.embedded),
            "skipped": len(total.skipped),
            "failed": total.failed,
            "held": after.held,
            "total": after.total,
            "complete": after.complete,
            "seconds": round(seconds, 2),
            "items_per_s": round(len(total.embedded) / seconds, 2) if seconds > 0 else None,
        }
        click.echo(json.dumps(report, indent=2))
        if make_live and after.complete:
            _activate(services, collection, force=False)
        elif after.complete:
            click.echo(f"complete: make it live with `clothes-search index activate {collection}`", err=True)
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        services.close()


def _run(services: Services, version_id: int, skus: list[str], pace: BuildPace) -> ReindexOutcome:
    """The build with a progress bar (items/s and the time left, from tqdm)."""
    with tqdm(total=len(skus), unit="item", desc="re-indexing", dynamic_ncols=True) as bar:
        failed = 0

        def on_batch(outcome: ReindexOutcome) -> None:
            nonlocal failed
            failed += len(outcome.failed)
            bar.update(len(outcome.embedded) + len(outcome.skipped) + len(outcome.failed))
            bar.set_postfix(failed=failed)

        return run_build(services, version_id, skus, pace, on_batch)


def _activate(services: Services, collection: str, force: bool) -> None:
    done = activate_when_ready(
        services.database,
        services.store,
        collection,
        services.settings.versions,
        force=force,
        progress=lambda message: click.echo(message, err=True),
    )
    was = f" (was {done.previous})" if done.previous else ""
    click.echo(f"{collection} is live{was}")


@click.command()
@click.argument("collection")
@click.option("--force", is_flag=True, help="Even if incomplete, stale, or an API process lacks the models.")
@pass_cli
def activate(cli: CliContext, collection: str, force: bool) -> None:
    """Make an index version live (by collection name, as `index status` lists them).

    Refused for a version that does not hold the whole catalog, or one retired longer ago than
    versions.retention_s; waits until every API process has loaded its models, then switches.
    """
    services = Services(cli.settings)
    try:
        _activate(services, collection, force)
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        services.close()


@click.command()
@click.argument("collection")
@click.option("--force", is_flag=True, help="Also a version being built or still retained.")
@pass_cli
def drop(cli: CliContext, collection: str, force: bool) -> None:
    """Remove an index version and its post-processed versions (collections, crop rows); not the live one."""
    services = Services(cli.settings)
    versions = cli.settings.versions
    try:
        dropped = drop_version(services.database, services.store, collection, versions, force=force)
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        services.close()
    click.echo(json.dumps({"dropped": dropped}))


@click.command()
@pass_cli
def gc(cli: CliContext) -> None:
    """Remove the retired index versions past versions.retention_s."""
    services = Services(cli.settings)
    try:
        dropped = collect_garbage(services.database, services.store, cli.settings.versions)
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        services.close()
    click.echo(json.dumps({"dropped": dropped}))
