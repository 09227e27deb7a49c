"""``clothes-search index``: index versions and repairs between the database and Milvus."""

from __future__ import annotations

import json

import click
from sqlalchemy import func, select

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from db.models import Crop, IndexVersion
from db.reconcile import reconcile as run_reconcile
from db.session import Database
from db.vectors import VectorStore


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
@pass_cli
def status(cli: CliContext) -> None:
    """List the index versions with their state and crop counts (database and Milvus)."""
    settings = cli.settings
    database = Database(settings.database)
    try:
        with database.session() as session, VectorStore(settings.milvus) as store:
            versions = session.scalars(select(IndexVersion).order_by(IndexVersion.id)).all()
            for version in versions:
                rows = session.scalar(select(func.count(Crop.id)).where(Crop.index_version_id == version.id))
                name = version.collection_name
                vectors = store.count(name) if store.has_collection(name) else 0
                click.echo(
                    f"{version.collection_name:<24} {version.state:<9} dim={version.dimension:<5} "
                    f"crop rows={rows:<8} vectors={vectors:<8} {version.signature_description}"
                )
            if not versions:
                click.echo("no index versions yet")
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.dispose()
