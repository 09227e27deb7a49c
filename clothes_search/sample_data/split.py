"""One split of the sample set: which garments become catalog items, how they pair up, and its images.

Randomness: every decision draws from its own ``numpy`` generator seeded with
``(seed, split code, purpose, number)``, so a split depends only on the seed and its own flags, and
the images of one item do not change when another flag adds images elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from clothes_search.sample_data.annotations import ImageSource, garment_annotation, image_annotation
from clothes_search.sample_data.backgrounds import background_crop, procedural_background
from clothes_search.sample_data.catalog_feed import Listing, draw_listing
from clothes_search.sample_data.categories import GARMENT_CLASS_BY_LABEL, GARMENT_CLASSES, GarmentClass
from clothes_search.sample_data.compositing import Scene
from clothes_search.sample_data.errors import SampleDataError
from clothes_search.sample_data.fashion_mnist import FashionMnist
from clothes_search.sample_data.garments import Cutout, GarmentLook, draw_look, render_garment
from clothes_search.sample_data.scenes import CONSUMER_SIZE, compose_consumer_scene
from clothes_search.sample_data.sources import FashionMnistPart
from clothes_search.sample_data.studio import compose_shop_scene
from clothes_search.sample_data.styles import SEEN, UNSEEN, Style

SplitName = Literal["train", "validation", "validation_unseen"]

#: The Fashion-MNIST part each split takes its garments from, which keeps train's items apart from the
#: validation splits' (and the two validation splits take different t10k garments).
SPLIT_PART: dict[SplitName, FashionMnistPart] = {
    "validation": "t10k",
    "train": "train",
    "validation_unseen": "t10k",
}
#: The generator world of each split: ``validation_unseen`` is drawn in a style training never sees.
SPLIT_STYLE: dict[SplitName, Style] = {"validation": SEEN, "train": SEEN, "validation_unseen": UNSEEN}
_SPLIT_CODE: dict[SplitName, int] = {"validation": 1, "train": 2, "validation_unseen": 3}
_SELECT, _ITEM, _SHOP, _USER = 0, 1, 2, 3

#: Images with fewer garment pixels (of 28 x 28) are not used: too little to draw.
_MIN_GARMENT_PIXELS = 40
DISTRACTOR_PROBABILITY = 0.5


@dataclass(frozen=True)
class CatalogItem:
    """A product of the catalog: one Fashion-MNIST garment in one look, a member of one pair."""

    item_id: str
    number: int
    fashion_mnist_index: int
    garment_class: GarmentClass
    look: GarmentLook
    listing: Listing
    pair_id: int
    style: int


@dataclass(frozen=True)
class Pair:
    """2–3 items shown together in the pair's consumer images; their styles are 1, 2, 3."""

    pair_id: int
    items: tuple[CatalogItem, ...]


@dataclass(frozen=True)
class SplitPlan:
    """The items of a split grouped into pairs, and the garments left over for distractors."""

    name: SplitName
    seed: int
    pairs: tuple[Pair, ...]
    distractor_pool: np.ndarray

    @property
    def items(self) -> tuple[CatalogItem, ...]:
        return tuple(item for pair in self.pairs for item in pair.items)


@dataclass(frozen=True)
class RenderedImage:
    """One generated image: its scene (background, layers, placed garments) and DeepFashion2 record.

    ``item`` is the catalog item a shop image shows (None for consumer images); ``background`` names
    the background family (``photo:<file>``, ``procedural:<kind>`` or ``studio:<kind>``).
    """

    image_id: str
    source: ImageSource
    pair_id: int
    scene: Scene
    annotation: dict[str, object]
    item: CatalogItem | None
    background: str


def _rng(seed: int, split: SplitName, purpose: int, *numbers: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODE[split], purpose, *numbers])


def _usable_indices(data: FashionMnist, label: int) -> np.ndarray:
    indices = np.flatnonzero(data.labels == label)
    pixels = (data.images[indices] > 12).sum(axis=(1, 2))
    return indices[pixels >= _MIN_GARMENT_PIXELS]


def _pair_sizes(count: int, rng: np.random.Generator) -> list[int]:
    """Split ``count >= 2`` items into groups of 2 or 3."""
    sizes = []
    remaining = count
    while remaining:
        size = remaining if remaining <= 3 else 2 if remaining == 4 else int(rng.integers(2, 4))
        sizes.append(size)
        remaining -= size
    return sizes


def plan_split(
    name: SplitName,
    data: FashionMnist,
    *,
    items: int,
    seed: int,
    first_pair_id: int,
    exclude: np.ndarray | None = None,
) -> SplitPlan:
    """Choose ``items`` garments, class-balanced, and group them into pairs numbered from ``first_pair_id``.

    Garments whose index is in ``exclude`` (another split's items of the same Fashion-MNIST part) are
    neither items nor distractors here; looks are drawn from the split's style (:data:`SPLIT_STYLE`).

    Items are taken round-robin over the six classes (a fresh class order per round), so a pair's 2–3
    items are of different Fashion-MNIST classes. Raises :class:`SampleDataError` if there are too few.
    """
    if items < 2:
        raise SampleDataError(f"{name}: at least 2 items are needed to form a pair, got {items}")
    rng = _rng(seed, name, _SELECT)
    world = SPLIT_STYLE[name]
    excluded = np.asarray([] if exclude is None else exclude, dtype=np.int64)
    candidates = {
        garment.label: rng.permutation(np.setdiff1d(_usable_indices(data, garment.label), excluded))
        for garment in GARMENT_CLASSES
    }
    available = sum(len(indices) for indices in candidates.values())
    if items > available:
        raise SampleDataError(
            f"{name}: {items} items asked for, Fashion-MNIST has {available} usable garments"
        )
    taken = dict.fromkeys(candidates, 0)
    chosen: list[int] = []
    while len(chosen) < items:
        for position in rng.permutation(len(GARMENT_CLASSES)):
            label = GARMENT_CLASSES[int(position)].label
            if taken[label] < len(candidates[label]) and len(chosen) < items:
                chosen.append(int(candidates[label][taken[label]]))
                taken[label] += 1

    pairs = []
    cursor = 0
    for offset, size in enumerate(_pair_sizes(items, rng)):
        pair_id = first_pair_id + offset
        members = []
        for style, index in enumerate(chosen[cursor : cursor + size], start=1):
            number = cursor + style
            item_rng = _rng(seed, name, _ITEM, number)
            garment = GARMENT_CLASS_BY_LABEL[int(data.labels[index])]
            members.append(
                CatalogItem(
                    item_id=f"{name}-item-{number:05d}",
                    number=number,
                    fashion_mnist_index=index,
                    garment_class=garment,
                    look=draw_look(item_rng, world.palette, world.patterns),
                    listing=draw_listing(item_rng, garment),
                    pair_id=pair_id,
                    style=style,
                )
            )
        pairs.append(Pair(pair_id=pair_id, items=tuple(members)))
        cursor += size
    unused = np.setdiff1d(np.concatenate(list(candidates.values())), np.asarray(chosen, dtype=np.int64))
    return SplitPlan(name=name, seed=seed, pairs=tuple(pairs), distractor_pool=np.sort(unused))


def _background(
    style: Style, photos: Mapping[str, Image.Image], rng: np.random.Generator
) -> tuple[str, np.ndarray]:
    """A consumer image's background of ``style``: a procedural scene (its share of the time) or a
    crop of one of its photos; returns ``(family, (H, W, 3) float32 pixels)``."""
    if rng.uniform() < style.procedural_share:
        kind = style.procedural[int(rng.integers(len(style.procedural)))]
        return f"procedural:{kind}", procedural_background(kind, rng, *CONSUMER_SIZE)
    name = style.photos[int(rng.integers(len(style.photos)))]
    try:
        photo = photos[name]
    except KeyError:
        raise SampleDataError(f"style {style.name!r} needs the background photo {name}") from None
    return f"photo:{name}", background_crop(photo, rng, *CONSUMER_SIZE)


def _shop_image(
    image_id: str, item: CatalogItem, cutout: Cutout, style: Style, rng: np.random.Generator
) -> RenderedImage:
    scene = compose_shop_scene(cutout, rng, style.studio)
    records = [
        garment_annotation(item.garment_class, placed.box, item.style, placed.visible_fraction)
        for placed in scene.garments
    ]
    annotation = image_annotation("shop", item.pair_id, records)
    return RenderedImage(image_id, "shop", item.pair_id, scene, annotation, item, f"studio:{style.studio}")


def _user_image(
    image_id: str,
    pair: Pair,
    cutouts: Sequence[Cutout],
    plan: SplitPlan,
    data: FashionMnist,
    photos: Mapping[str, Image.Image],
    rng: np.random.Generator,
) -> RenderedImage:
    world = SPLIT_STYLE[plan.name]
    family, background = _background(world, photos, rng)
    shown: list[tuple[GarmentClass, int]] = [(item.garment_class, item.style) for item in pair.items]
    garments = list(cutouts)
    has_distractor = len(plan.distractor_pool) > 0 and rng.uniform() < DISTRACTOR_PROBABILITY
    if has_distractor:
        index = int(plan.distractor_pool[int(rng.integers(len(plan.distractor_pool)))])
        garment = GARMENT_CLASS_BY_LABEL[int(data.labels[index])]
        look = draw_look(rng, world.palette, world.patterns)
        garments.append(render_garment(data.images[index], look, seal_seams=garment.seal_seams))
        shown.append((garment, 0))
    scene = compose_consumer_scene(
        background, garments, rng, has_distractor=has_distractor, defects=world.defects
    )
    records = []
    for placed in scene.garments:
        garment, style = shown[placed.source_index]
        records.append(garment_annotation(garment, placed.box, style, placed.visible_fraction))
    annotation = image_annotation("user", pair.pair_id, records)
    return RenderedImage(image_id, "user", pair.pair_id, scene, annotation, None, family)


def render_split(
    plan: SplitPlan,
    data: FashionMnist,
    photos: Mapping[str, Image.Image],
    *,
    shop_per_item: int,
    user_per_pair: int,
) -> Iterator[RenderedImage]:
    """Yield the split's images pair by pair: each item's shop images, then the pair's consumer images.

    Image ids count from ``"000001"`` in that order. ``photos`` maps the background photos' file names
    to the photos; a split uses those of its style only.
    """
    world = SPLIT_STYLE[plan.name]
    number = 0
    for pair_number, pair in enumerate(plan.pairs, start=1):
        cutouts = [
            render_garment(
                data.images[item.fashion_mnist_index], item.look, seal_seams=item.garment_class.seal_seams
            )
            for item in pair.items
        ]
        for item, cutout in zip(pair.items, cutouts, strict=True):
            for shot in range(shop_per_item):
                number += 1
                rng = _rng(plan.seed, plan.name, _SHOP, item.number, shot)
                yield _shop_image(f"{number:06d}", item, cutout, world, rng)
        for shot in range(user_per_pair):
            number += 1
            rng = _rng(plan.seed, plan.name, _USER, pair_number, shot)
            yield _user_image(f"{number:06d}", pair, cutouts, plan, data, photos, rng)
