"""``clothes-search db``: schema migrations of the metadata database."""

from __future__ import annotations

import click

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from db import migrate
from db.session import Database


@click.group("db")
def database() -> None:
    """Metadata database (SQLite by default, PostgreSQL by URL)."""


def _safe_url(cli: CliContext) -> str:
    return Database(cli.settings.database).safe_url


@database.command()
@click.argument("revision", default="head")
@pass_cli
def upgrade(cli: CliContext, revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    try:
        migrate.upgrade(cli.settings.database, revision)
        click.echo(f"{_safe_url(cli)}: at revision {migrate.current_revision(cli.settings.database)}")
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc


@database.command()
@click.argument("revision")
@pass_cli
def downgrade(cli: CliContext, revision: str) -> None:
    """Revert migrations down to REVISION ('base' removes the schema)."""
    try:
        migrate.downgrade(cli.settings.database, revision)
        click.echo(
            f"{_safe_url(cli)}: at revision {migrate.current_revision(cli.settings.database) or 'base'}"
        )
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc


@database.command()
@pass_cli
def current(cli: CliContext) -> None:
    """Print the database's current revision."""
    try:
        click.echo(migrate.current_revision(cli.settings.database) or "base")
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
