"""Reader for a DeepFashion2 split folder: ``image/<id>.jpg`` and ``annos/<id>.json``.

Each annotation file describes one image: its ``source`` (``"user"``: a consumer photo, a query;
``"shop"``: a catalogue photo, the gallery), its image-level ``pair_id`` and the garments ``item1`` …
``itemN``. A garment has a ``category_id`` (1–13), a ``category_name``, a ``bounding_box``
``[x1, y1, x2, y2]`` in pixels and a ``style``: garments of one pair with the same positive style are the
same product; style 0 means the garment is not part of a consumer-to-shop pair. The other keys real files
carry (``segmentation``, ``landmarks``, ``scale``, ``occlusion``, ``zoom_in``, ``viewpoint``) are ignored.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clothes_search.errors import ClothesSearchError

__all__ = [
    "CATEGORY_NAMES",
    "DatasetFormatError",
    "GarmentAnnotation",
    "ImageAnnotation",
    "category_key",
    "read_split",
]

#: DeepFashion2's category names, in ``category_id`` order (id 1 is index 0).
CATEGORY_NAMES: tuple[str, ...] = (
    "short sleeve top",
    "long sleeve top",
    "short sleeve outwear",
    "long sleeve outwear",
    "vest",
    "sling",
    "shorts",
    "trousers",
    "skirt",
    "short sleeve dress",
    "long sleeve dress",
    "vest dress",
    "sling dress",
)

_ITEM_KEY = re.compile(r"item([1-9][0-9]*)")
_SOURCES = ("user", "shop")


class DatasetFormatError(ClothesSearchError):
    """A DeepFashion2 split cannot be read: a missing folder or image, broken JSON, a bad field."""

    kind = "dataset_format"


def category_key(category_id: int) -> str:
    """Our vocabulary's name for a DeepFashion2 category id: ``1 -> "short_sleeve_top"``."""
    if isinstance(category_id, bool) or not isinstance(category_id, int):
        raise ValueError(f"category_id must be an integer, got {category_id!r}")
    if not 1 <= category_id <= len(CATEGORY_NAMES):
        raise ValueError(f"category_id must be in 1..{len(CATEGORY_NAMES)}, got {category_id}")
    return CATEGORY_NAMES[category_id - 1].replace(" ", "_")


@dataclass(frozen=True)
class GarmentAnnotation:
    """One annotated garment of an image.

    ``box`` is ``(x1, y1, x2, y2)`` in pixels; ``style`` 0 means "not part of a consumer-to-shop pair".
    """

    key: str
    category_id: int
    category: str
    box: tuple[float, float, float, float]
    style: int


@dataclass(frozen=True)
class ImageAnnotation:
    """One image of a split with its garments, sorted by their number (``item1``, ``item2``, … ``item10``)."""

    image_id: str
    image_path: Path
    source: Literal["user", "shop"]
    pair_id: int
    items: tuple[GarmentAnnotation, ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _garment(key: str, raw: object) -> GarmentAnnotation:
    """One ``itemN`` entry; raises ``ValueError`` naming the bad field."""
    if not isinstance(raw, dict):
        raise ValueError(f"{key} must be an object, got {type(raw).__name__}")
    category_id = raw.get("category_id")
    if not _is_int(category_id) or not 1 <= category_id <= len(CATEGORY_NAMES):
        raise ValueError(
            f"{key}.category_id must be an integer in 1..{len(CATEGORY_NAMES)}, got {category_id!r}"
        )
    name = raw.get("category_name")
    if name != CATEGORY_NAMES[category_id - 1]:
        raise ValueError(
            f"{key}.category_name {name!r} does not match category_id {category_id} "
            f"({CATEGORY_NAMES[category_id - 1]!r})"
        )
    box = raw.get("bounding_box")
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise ValueError(f"{key}.bounding_box must be [x1, y1, x2, y2] finite numbers, got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{key}.bounding_box must have x1 <= x2 and y1 <= y2, got {box!r}")
    style = raw.get("style")
    if not _is_int(style) or style < 0:
        raise ValueError(f"{key}.style must be an integer >= 0, got {style!r}")
    return GarmentAnnotation(key, category_id, category_key(category_id), (x1, y1, x2, y2), style)


def _image(image_id: str, image_path: Path, raw: Any) -> ImageAnnotation:
    """One annotation file's content; raises ``ValueError`` naming the bad field."""
    if not isinstance(raw, dict):
        raise ValueError(f"the top level must be an object, got {type(raw).__name__}")
    source = raw.get("source")
    if source not in _SOURCES:
        raise ValueError(f"source must be 'user' or 'shop', got {source!r}")
    pair_id = raw.get("pair_id")
    if not _is_int(pair_id):
        raise ValueError(f"pair_id must be an integer, got {pair_id!r}")
    numbered = []
    for key, value in raw.items():
        match = _ITEM_KEY.fullmatch(key)
        if match:
            numbered.append((int(match.group(1)), key, value))
    numbered.sort()
    items = tuple(_garment(key, value) for _, key, value in numbered)
    return ImageAnnotation(image_id, image_path, source, pair_id, items)


def read_split(root: Path) -> list[ImageAnnotation]:
    """Read every annotation of a DeepFashion2 split folder, sorted by image id.

    ``root`` holds ``annos/<id>.json`` and ``image/<id>.jpg``; every annotation needs its image (the image
    itself is not opened). Raises :class:`DatasetFormatError` naming the file and the reason.
    """
    root = Path(root)
    annos_dir, image_dir = root / "annos", root / "image"
    for folder in (annos_dir, image_dir):
        if not folder.is_dir():
            raise DatasetFormatError(
                f"{folder}: folder is missing (a DeepFashion2 split has annos/ and image/)"
            )
    images = []
    for anno_path in sorted(annos_dir.glob("*.json")):
        image_id = anno_path.stem
        try:
            raw = json.loads(anno_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetFormatError(f"{anno_path}: cannot read the JSON: {exc}") from exc
        image_path = image_dir / f"{image_id}.jpg"
        try:
            annotation = _image(image_id, image_path, raw)
        except ValueError as exc:
            raise DatasetFormatError(f"{anno_path}: {exc}") from exc
        if not image_path.is_file():
            raise DatasetFormatError(f"{anno_path}: its image {image_path} is missing")
        images.append(annotation)
    images.sort(key=lambda image: image.image_id)
    return images
