"""``build_sample_set``: generate the whole sample set (both splits, feeds, manifest, licences) into a folder.

Layout of ``out``::

    manifest.json  LICENSES.md
    validation/ validation_unseen/ train/
        image/<image_id>.jpg  annos/<image_id>.json  catalog.jsonl  scenes.jsonl

``scenes.jsonl`` says, per image, the generator style and background family it was drawn with
(``validation_unseen`` uses a style that ``train`` never does, see styles.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clothes_search.sample_data.catalog_feed import catalog_row
from clothes_search.sample_data.errors import SampleDataError
from clothes_search.sample_data.fashion_mnist import load_fashion_mnist
from clothes_search.sample_data.scenes import CONSUMER_SIZE
from clothes_search.sample_data.sources import SampleSources, sha256_of
from clothes_search.sample_data.split import (
    SPLIT_PART,
    SPLIT_STYLE,
    SplitName,
    SplitPlan,
    plan_split,
    render_split,
)
from clothes_search.sample_data.studio import SHOP_SIZE
from clothes_search.sample_data.writer import licenses_markdown, write_json, write_jsonl, write_rendered

GENERATOR = "clothes-search make-sample-data"
#: Bump when the same flags and seed would give different files.
GENERATOR_VERSION = 2
#: Validation first: its pair ids start at 1 and do not depend on the other splits' flags.
SPLITS: tuple[SplitName, ...] = ("validation", "validation_unseen", "train")
_OWNED = ("validation", "validation_unseen", "train", "manifest.json", "LICENSES.md")
_PROGRESS_EVERY = 100

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SplitSummary:
    """What one split holds; ``query_items`` counts consumer-image garments with ``style > 0``."""

    name: SplitName
    directory: Path
    catalog_path: Path
    items: int
    pairs: int
    shop_images: int
    user_images: int
    query_items: int
    distractors: int

    def as_json(self) -> dict[str, object]:
        return {
            "items": self.items,
            "pairs": self.pairs,
            "shop_images": self.shop_images,
            "user_images": self.user_images,
            "query_items": self.query_items,
            "distractors": self.distractors,
        }


@dataclass(frozen=True)
class SampleSetSummary:
    """The generated set: its folder, seed, per-split counts and the manifest and licence files."""

    out: Path
    seed: int
    splits: tuple[SplitSummary, ...]
    manifest_path: Path
    licenses_path: Path

    def split(self, name: SplitName) -> SplitSummary:
        return next(split for split in self.splits if split.name == name)


def _check_sizes(**sizes: int) -> None:
    minimum = {
        "seed": 0,
        "validation_items": 2,
        "unseen_items": 2,
        "train_items": 2,
        "shop_per_item": 1,
        "user_per_pair": 1,
        "train_user_per_pair": 1,
    }
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum[name]:
            raise SampleDataError(f"{name} must be an integer >= {minimum[name]}, got {value!r}")


def _is_previous_set(out: Path) -> bool:
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("generator") == GENERATOR


def _prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; then remove a previous sample set there."""
    if out.exists() and not out.is_dir():
        raise SampleDataError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SampleDataError(f"{out} is not empty; choose an empty folder or overwrite (CLI: --force)")
        if any((out / name).exists() for name in _OWNED) and not _is_previous_set(out):
            raise SampleDataError(
                f"{out} holds {', '.join(_OWNED)} files that are not from a previous sample set "
                "(no manifest.json of ours); remove them yourself"
            )
        for name in _OWNED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _open_photo(path: Path) -> Image.Image:
    try:
        with Image.open(path) as photo:
            return photo.convert("RGB")
    except OSError as exc:
        raise SampleDataError(f"{path}: cannot read the background photo: {exc}") from exc


def _write_split(
    out: Path,
    plan: SplitPlan,
    sources: SampleSources,
    photos: dict[str, Image.Image],
    *,
    shop_per_item: int,
    user_per_pair: int,
    progress: Progress,
) -> SplitSummary:
    split_dir = out / plan.name
    data = load_fashion_mnist(*sources.fashion_mnist_files(SPLIT_PART[plan.name]))
    total = len(plan.items) * shop_per_item + len(plan.pairs) * user_per_pair
    rows: list[dict[str, object]] = []
    scenes: list[dict[str, object]] = []
    style = SPLIT_STYLE[plan.name].name
    counts = {"shop": 0, "user": 0, "query": 0, "distractor": 0}
    images = render_split(plan, data, photos, shop_per_item=shop_per_item, user_per_pair=user_per_pair)
    for done, rendered in enumerate(images, start=1):
        path = write_rendered(split_dir, rendered).resolve()
        counts[rendered.source] += 1
        scenes.append(
            {
                "image_id": rendered.image_id,
                "source": rendered.source,
                "style": style,
                "background": rendered.background,
            }
        )
        if rendered.item is not None:
            item = rendered.item
            attributes: dict[str, str | int] = {
                "item_id": item.item_id,
                "pair_id": item.pair_id,
                "style": item.style,
                "fashion_mnist": f"{SPLIT_PART[plan.name]}:{item.fashion_mnist_index}",
            }
            sku = f"{plan.name}-{rendered.image_id}"
            rows.append(catalog_row(sku, path, item.garment_class, item.look, item.listing, attributes))
        else:
            styles = [
                garment["style"] for garment in rendered.annotation.values() if isinstance(garment, dict)
            ]
            counts["query"] += sum(1 for style in styles if style > 0)
            counts["distractor"] += sum(1 for style in styles if style == 0)
        if done % _PROGRESS_EVERY == 0 or done == total:
            progress(f"{plan.name}: {done}/{total} images")
    catalog_path = split_dir / "catalog.jsonl"
    write_jsonl(catalog_path, rows)
    write_jsonl(split_dir / "scenes.jsonl", scenes)
    return SplitSummary(
        name=plan.name,
        directory=split_dir,
        catalog_path=catalog_path,
        items=len(plan.items),
        pairs=len(plan.pairs),
        shop_images=counts["shop"],
        user_images=counts["user"],
        query_items=counts["query"],
        distractors=counts["distractor"],
    )


def _manifest(seed: int, flags: dict[str, int], splits: list[SplitSummary], sources: SampleSources) -> dict:
    roles = {
        path: f"Fashion-MNIST {path.name}"
        for part in ("train", "t10k")
        for path in sources.fashion_mnist_files(part)
    }
    roles |= {path: "background photo" for path in sources.background_files()}
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "flags": flags,
        "image_size": {"shop": list(SHOP_SIZE), "user": list(CONSUMER_SIZE)},
        "splits": {
            split.name: {
                **split.as_json(),
                "fashion_mnist_part": SPLIT_PART[split.name],
                "style": SPLIT_STYLE[split.name].name,
            }
            for split in splits
        },
        "sources": [
            {"path": str(path), "role": roles[path], "sha256": sha256_of(path)}
            for path in sources.all_files()
        ],
    }


def build_sample_set(
    out: Path,
    *,
    seed: int = 0,
    validation_items: int = 60,
    unseen_items: int = 60,
    train_items: int = 240,
    shop_per_item: int = 2,
    user_per_pair: int = 2,
    train_user_per_pair: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    sources: SampleSources | None = None,
) -> SampleSetSummary:
    """Generate the consumer-to-shop sample set into ``out``; same arguments, same bytes.

    Validation items come from Fashion-MNIST's t10k file and train items from its train file, so the
    splits share no garment; ``validation_unseen`` takes other t10k garments and draws them in a style
    (palette, patterns, backgrounds, studio, camera defects) that train never uses.
    ``train_user_per_pair`` (default ``user_per_pair``) sets the train split's consumer images per pair.
    ``out`` must be empty or missing unless ``overwrite``, which replaces a
    previous sample set there (and keeps other files). Raises :class:`SampleDataError` for bad sizes
    or an occupied folder and :class:`MissingSourceError` when an input file is not installed.
    """
    train_user_per_pair = user_per_pair if train_user_per_pair is None else train_user_per_pair
    _check_sizes(
        seed=seed,
        validation_items=validation_items,
        unseen_items=unseen_items,
        train_items=train_items,
        shop_per_item=shop_per_item,
        user_per_pair=user_per_pair,
        train_user_per_pair=train_user_per_pair,
    )
    sources = sources or SampleSources()
    sources.check()
    report = progress or (lambda message: None)
    out = Path(out)
    flags = {
        "validation_items": validation_items,
        "unseen_items": unseen_items,
        "train_items": train_items,
        "shop_per_item": shop_per_item,
        "user_per_pair": user_per_pair,
        "train_user_per_pair": train_user_per_pair,
    }
    item_counts: dict[SplitName, int] = {
        "validation": validation_items,
        "validation_unseen": unseen_items,
        "train": train_items,
    }
    plans: list[SplitPlan] = []
    first_pair_id = 1
    for name in SPLITS:
        data = load_fashion_mnist(*sources.fashion_mnist_files(SPLIT_PART[name]))
        taken = [
            item.fashion_mnist_index
            for plan in plans
            if SPLIT_PART[plan.name] == SPLIT_PART[name]
            for item in plan.items
        ]
        plan = plan_split(
            name,
            data,
            items=item_counts[name],
            seed=seed,
            first_pair_id=first_pair_id,
            exclude=np.asarray(taken, dtype=np.int64),
        )
        plans.append(plan)
        first_pair_id = plan.pairs[-1].pair_id + 1
    _prepare_output(out, overwrite)

    photos = {path.name: _open_photo(path) for path in sources.background_files()}
    splits = []
    for plan in plans:
        report(f"{plan.name}: {len(plan.items)} items in {len(plan.pairs)} pairs")
        splits.append(
            _write_split(
                out,
                plan,
                sources,
                photos,
                shop_per_item=shop_per_item,
                user_per_pair=train_user_per_pair if plan.name == "train" else user_per_pair,
                progress=report,
            )
        )
    licenses_path = out / "LICENSES.md"
    licenses_path.write_text(licenses_markdown(sources), encoding="utf-8")
    manifest_path = out / "manifest.json"
    write_json(manifest_path, _manifest(seed, flags, splits, sources))
    report(f"wrote {manifest_path}")
    return SampleSetSummary(
        out=out, seed=seed, splits=tuple(splits), manifest_path=manifest_path, licenses_path=licenses_path
    )
