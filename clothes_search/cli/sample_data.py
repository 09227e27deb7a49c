"""``clothes-search make-sample-data OUT``: the offline consumer-to-shop sample set (DeepFashion2 format)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from clothes_search.errors import ClothesSearchError
from clothes_search.sample_data import build_sample_set


@click.command("make-sample-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--validation-items",
    type=click.IntRange(min=2),
    default=60,
    show_default=True,
    help="Catalog items of the validation split (from Fashion-MNIST's t10k file).",
)
@click.option(
    "--unseen-items",
    type=click.IntRange(min=2),
    default=60,
    show_default=True,
    help="Catalog items of the validation_unseen split (other t10k garments, in a style train never uses).",
)
@click.option(
    "--train-items",
    type=click.IntRange(min=2),
    default=240,
    show_default=True,
    help="Catalog items of the train split (from Fashion-MNIST's train file).",
)
@click.option(
    "--shop-per-item", type=click.IntRange(min=1), default=2, show_default=True, help="Shop images per item."
)
@click.option(
    "--user-per-pair",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Consumer images per pair of 2-3 items.",
)
@click.option(
    "--train-user-per-pair",
    type=click.IntRange(min=1),
    help="Consumer images per pair in the train split (default: --user-per-pair).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option(
    "--force", is_flag=True, help="Write into a non-empty OUT, replacing a previous sample set there."
)
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def make_sample_data(
    out: Path,
    validation_items: int,
    unseen_items: int,
    train_items: int,
    shop_per_item: int,
    user_per_pair: int,
    train_user_per_pair: int | None,
    seed: int,
    force: bool,
    quiet: bool,
) -> None:
    """Generate a small consumer-to-shop data set in DeepFashion2 format into OUT, offline.

    Garments are Fashion-MNIST images (installed by scripts/system-deps.sh), upscaled and painted in a
    colour and pattern per catalog item; shop images show one item on a studio backdrop, consumer images
    a pair's items on crops of OpenCV's sample photos or procedural scenes. validation_unseen is drawn
    in another style (palette, prints, places, studio, camera) than train and validation, to measure
    generalisation. Writes OUT/{validation,validation_unseen,train}/{image,annos}/,
    a catalog feed per split (catalog.jsonl), manifest.json and LICENSES.md. The same flags and seed
    give the same files.
    """
    started = time.perf_counter()
    try:
        summary = build_sample_set(
            out,
            seed=seed,
            validation_items=validation_items,
            unseen_items=unseen_items,
            train_items=train_items,
            shop_per_item=shop_per_item,
            user_per_pair=user_per_pair,
            train_user_per_pair=train_user_per_pair,
            overwrite=force,
            progress=None if quiet else lambda message: click.echo(message, err=True),
        )
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    elapsed = time.perf_counter() - started
    click.echo(f"sample set in {summary.out} (seed {summary.seed}, {elapsed:.1f}s)")
    for split in summary.splits:
        click.echo(
            f"  {split.name}: {split.items} items in {split.pairs} pairs, {split.shop_images} shop images, "
            f"{split.user_images} consumer images with {split.query_items} query garments "
            f"and {split.distractors} distractors; feed {split.catalog_path}"
        )
