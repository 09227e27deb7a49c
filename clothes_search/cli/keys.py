"""``clothes-search keys``: API keys with roles (search, catalog, admin) for the HTTP API."""

from __future__ import annotations

import json

import click

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from db.api_keys import Role, create_key, list_keys, new_key_text, revoke_key
from db.session import Database

ROLE_NAMES = [role.value for role in Role]


@click.group()
def keys() -> None:
    """API keys (stored hashed; a key is shown once, when it is created)."""


@keys.command()
@click.option("--name", required=True, help="Who or what uses the key (recorded as the jobs' creator).")
@click.option(
    "--role", "roles", multiple=True, required=True, type=click.Choice(ROLE_NAMES), help="Repeatable."
)
@pass_cli
def create(cli: CliContext, name: str, roles: tuple[str, ...]) -> None:
    """Create a key and print it (the only time it is shown)."""
    database = Database(cli.settings.database)
    try:
        with database.session() as session:
            made = create_key(session, name, roles)
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.dispose()
    click.echo(made.key)
    roles_text = ", ".join(sorted(r.value for r in made.principal.roles))
    click.echo(f"key {made.principal.key_id} ({name}): {roles_text}. Store it now: it is not kept.", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_cli
def list_command(cli: CliContext, as_json: bool) -> None:
    """The keys: id, name, roles, when created, last used and revoked (never the secrets)."""
    database = Database(cli.settings.database)
    try:
        with database.session() as session:
            rows = [
                {
                    "key_id": k.key_id,
                    "name": k.name,
                    "roles": list(k.roles),
                    "created_at": k.created_at.isoformat(),
                    "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                }
                for k in list_keys(session)
            ]
    finally:
        database.dispose()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        click.echo(f"{row['key_id']}  {row['name']:<24} {','.join(row['roles']):<22} {state}")


@keys.command()
@click.argument("key_id")
@pass_cli
def revoke(cli: CliContext, key_id: str) -> None:
    """Revoke the key KEY_ID (the requests that carry it answer 401 from then on)."""
    database = Database(cli.settings.database)
    try:
        with database.session() as session:
            if not revoke_key(session, key_id):
                raise click.ClickException(f"no active key {key_id}")
    finally:
        database.dispose()
    click.echo(f"revoked {key_id}")


@keys.command()
def generate() -> None:
    """Print a new key without storing it: for CLOTHES_SEARCH_API__BOOTSTRAP_ADMIN_KEY (containers)."""
    click.echo(new_key_text())
