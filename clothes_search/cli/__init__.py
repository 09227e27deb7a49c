"""The ``clothes-search`` command line: one click group per area."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from clothes_search.cli.bench import bench
from clothes_search.cli.bench_ingest import bench_ingest
from clothes_search.cli.bench_milvus import bench_milvus
from clothes_search.cli.bench_reindex import bench_reindex
from clothes_search.cli.bench_similar import bench_similar
from clothes_search.cli.context import CliContext
from clothes_search.cli.database import database
from clothes_search.cli.embed import embed
from clothes_search.cli.evaluate import evaluate
from clothes_search.cli.index import index
from clothes_search.cli.ingest import ingest, worker
from clothes_search.cli.keys import keys
from clothes_search.cli.milvus import milvus
from clothes_search.cli.models import models
from clothes_search.cli.sample_data import make_sample_data
from clothes_search.cli.serve import serve
from clothes_search.cli.train import train


@click.group()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CLOTHES_SEARCH_CONFIG",
    help="TOML config file (env: CLOTHES_SEARCH_CONFIG). Environment variables CLOTHES_SEARCH_* override it.",
)
@click.option("--log-level", default="WARNING", show_default=True, help="Python logging level.")
@click.version_option(package_name="clothes-search")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, log_level: str) -> None:
    """Visual search for fashion catalogs."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = CliContext(config_file=config_file)


main.add_command(embed)
main.add_command(models)
main.add_command(bench)
main.add_command(database)
main.add_command(index)
main.add_command(keys)
main.add_command(milvus)
main.add_command(ingest)
main.add_command(worker)
main.add_command(serve)
main.add_command(evaluate)
main.add_command(make_sample_data)
main.add_command(train)
bench.add_command(bench_milvus)
bench.add_command(bench_ingest)
bench.add_command(bench_similar)
bench.add_command(bench_reindex)
