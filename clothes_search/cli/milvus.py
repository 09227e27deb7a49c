"""``clothes-search milvus``: run a local Milvus Lite server, show what the vector store holds."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from clothes_search.cli.context import CliContext, pass_cli
from db.vectors import VectorStore, VectorStoreError


def milvus_lite_executable() -> Path:
    """The ``milvus-lite`` console script of this environment (next to the Python interpreter)."""
    beside = Path(sys.executable).with_name("milvus-lite")
    if beside.is_file():
        return beside
    found = shutil.which("milvus-lite")
    if found is None:
        raise click.ClickException("the milvus-lite console script is missing: pip install milvus-lite")
    return Path(found)


@click.group()
def milvus() -> None:
    """The Milvus vector store (embedded Milvus Lite, or a server)."""


@milvus.command("serve")
@click.option("--host", help="Bind address [default: settings milvus.server_host].")
@click.option("--port", type=click.IntRange(1, 65535), help="Port [default: settings milvus.server_port].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory [default: settings milvus.server_data_dir].",
)
@pass_cli
def serve(cli: CliContext, host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Run a Milvus Lite server in the foreground, so that several processes share one store.

    Milvus Lite on a file allows one process; API workers and ingestion workers together need
    this server (or a real Milvus). This process becomes the server; stop it with Ctrl-C or SIGTERM.
    """
    settings = cli.settings.milvus
    host = host or settings.server_host
    port = port or settings.server_port
    data_dir = data_dir or settings.server_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    click.echo(f"Milvus Lite server on {host}:{port}, data in {data_dir}")
    click.echo(f"Point every process at it with: CLOTHES_SEARCH_MILVUS__URI=http://{client_host}:{port}")
    executable = str(milvus_lite_executable())
    sys.stdout.flush()
    sys.stderr.flush()
    # replace this process: signals (Ctrl-C, SIGTERM from a supervisor) reach the server directly
    os.execv(
        executable, [executable, "server", "--data-dir", str(data_dir), "--host", host, "--port", str(port)]
    )


@milvus.command("stats")
@pass_cli
def stats(cli: CliContext) -> None:
    """Collections, their sizes, indexes and aliases."""
    settings = cli.settings.milvus
    try:
        with VectorStore(settings) as store:
            click.echo(f"Milvus: {store.uri}")
            names = store.list_collections()
            live = store.resolve_alias(settings.live_alias)
            click.echo(f"live alias {settings.live_alias!r} -> {live or '(not set)'}")
            if not names:
                click.echo("no collections")
                return
            click.echo("| collection | rows | dim | index | metric | partition key | aliases |")
            click.echo("|---|---:|---:|---|---|---|---|")
            for name in names:
                info = store.describe(name)
                aliases = ", ".join(info.aliases) or "-"
                click.echo(
                    f"| {info.name} | {info.rows} | {info.dim} | {info.index_type} | {info.metric_type} "
                    f"| {info.partition_key or '-'} | {aliases} |"
                )
    except VectorStoreError as exc:
        raise click.ClickException(str(exc)) from exc
