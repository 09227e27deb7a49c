"""``clothes-search index``: index versions and repairs between the database and Milvus."""

from __future__ import annotations

import json

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.cli.index_build import activate, build, drop, gc
from clothes_search.errors import ClothesSearchError
from db.index_versions import live_version
from db.models import IndexVersion
from db.postprocessed_versions import PostprocessSpec, build_postprocessed_version
from db.reconcile import reconcile as run_reconcile
from db.serving_processes import recent
from db.session import Database
from db.vectors import VectorStore
from db.version_lifecycle import activate_when_ready, version_overview


@click.group()
def index() -> None:
    """Index versions (one Milvus collection per model signature) and their consistency."""


@index.command()
@click.option("--grace", type=float, help="Keep row-less vectors younger than this (s) [settings].")
@pass_cli
def reconcile(cli: CliContext, grace: float | None) -> None:
    """Delete orphan vectors, re-queue items whose vectors are missing, re-sync changed metadata."""
    settings = cli.settings
    database = Database(settings.database)
    try:
        with VectorStore(settings.milvus) as store:
            grace_s = settings.milvus.orphan_grace_s if grace is None else grace
            report = run_reconcile(database, store, grace_s=grace_s)
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.dispose()
    click.echo(
        json.dumps(
            {
                "versions": report.versions,
                "orphan_vectors_deleted": report.orphan_vectors_deleted,
                "orphan_vectors_kept_young": report.orphan_vectors_kept_young,
                "requeued": report.requeued,
                "resynced": report.resynced,
            },
            indent=2,
        )
    )


@index.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@pass_cli
def status(cli: CliContext, as_json: bool) -> None:
    """The index versions (state, items held of the catalog, vectors, models) and the API processes."""
    settings = cli.settings
    database = Database(settings.database)
    try:
        with database.session() as session, VectorStore(settings.milvus) as store:
            versions = [
                version_overview(session, store, version, settings.versions.retention_s)
                for version in session.scalars(select(IndexVersion).order_by(IndexVersion.id))
            ]
            processes = [
                {"process": p.id, "role": p.role, "models": p.signatures, "seen_at": p.seen_at.isoformat()}
                for p in recent(session, settings.versions.heartbeat_s, role=None)
            ]
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.dispose()
    if as_json:
        click.echo(json.dumps({"versions": versions, "processes": processes}, indent=2))
        return
    for v in versions:
        complete = "complete" if v["complete"] else "INCOMPLETE"
        click.echo(
            f"{v['collection']:<24} {v['state']:<9} {v['signature']} dim={v['dimension']:<5} "
            f"items={v['items_held']}/{v['items_total']} {complete:<10} crop rows={v['crop_rows']:<8} "
            f"vectors={v['vectors']:<8} {v['description']}"
            + (f" [{v['postprocess']}]" if v["postprocess"] else "")
            + (f" (retained until {v['retained_until']})" if v["retained_until"] else "")
        )
    if not versions:
        click.echo("no index versions yet")
    for p in processes:
        click.echo(f"process {p['process']} ({p['role']}): models {', '.join(p['models']) or 'none'}")


@index.command()
@click.option(
    "--dba-top-n",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Database-side augmentation: average each vector with its N nearest (0: off).",
)
@click.option("--dba-weights", type=click.Choice(["uniform", "linear"]), default="uniform", show_default=True)
@click.option("--pca-dim", type=click.IntRange(min=1), help="PCA whitening to this dimension (default: off).")
@click.option(
    "--pca-whiten/--pca-project",
    default=True,
    show_default=True,
    help="Whiten, or only project onto the top axes (a reduced index: dim/d of the memory).",
)
@click.option("--pca-eps", type=float, default=1e-6, show_default=True, help="Eigenvalue shrinkage.")
@click.option(
    "--pca-sample",
    type=click.IntRange(min=2),
    default=100_000,
    show_default=True,
    help="Fit the whitening on a random sample of this many indexed vectors.",
)
@click.option("--base", "base_collection", help="The base version's collection [the live one's base].")
@click.option("--activate", "make_live", is_flag=True, help="Make the new version live when built.")
@pass_cli
def postprocess(
    cli: CliContext, dba_top_n: int, dba_weights: str, pca_dim: int | None, pca_whiten: bool, pca_eps: float,
    pca_sample: int, base_collection: str | None, make_live: bool,
) -> None:  # fmt: skip
    """Build a DBA and/or PCA-whitened version of a base index version (off by default in the paper)."""
    settings = cli.settings
    try:
        spec = PostprocessSpec(dba_top_n, dba_weights, pca_dim, pca_eps, pca_sample, pca_whiten)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    database = Database(settings.database)
    try:
        with VectorStore(settings.milvus) as store:
            with database.session() as session:
                base = _find_base(session, base_collection)
                base_id = base.id
            report = build_postprocessed_version(
                database, store, base_id, spec, progress=lambda message: click.echo(message, err=True)
            )
            if make_live:
                activate_when_ready(database, store, report.collection, settings.versions)
    except (ClothesSearchError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.dispose()
    click.echo(
        json.dumps(
            {
                "collection": report.collection,
                "postprocess": spec.describe(),
                "vectors": report.vectors,
                "dimension": report.dimension,
                "live": make_live,
                "seconds": {k: round(v, 2) for k, v in report.seconds.items()},
            },
            indent=2,
        )
    )


def _find_base(session: Session, collection: str | None) -> IndexVersion:
    if collection is None:
        version = live_version(session)
        if version is None:
            raise click.ClickException("no live index version: ingest a catalog first, or pass --base")
    else:
        version = session.scalar(select(IndexVersion).where(IndexVersion.collection_name == collection))
        if version is None:
            raise click.ClickException(f"no index version {collection!r}: see `clothes-search index status`")
    if version.base_version_id is not None:
        version = session.get(IndexVersion, version.base_version_id)
    return version


index.add_command(build)
index.add_command(activate)
index.add_command(drop)
index.add_command(gc)
