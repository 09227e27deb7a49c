"""DeepFashion2 annotation records for the generated images.

One JSON object per image: ``source`` ("user" or "shop"), ``pair_id`` and ``item1`` … ``itemN``. The
fields DeepFashion2 derives from manual work are given fixed values (``scale`` 1, ``zoom_in`` 1,
``viewpoint`` 2, no ``segmentation`` or ``landmarks``); ``occlusion`` comes from the visible share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from clothes_search.sample_data.categories import GarmentClass
from clothes_search.sample_data.compositing import BoxXYXY

ImageSource = Literal["user", "shop"]


def occlusion_level(visible_fraction: float) -> int:
    """DeepFashion2's occlusion grade from the share of the visible share: 1 slight, 2 medium, 3 heavy."""
    if visible_fraction >= 0.9:
        return 1
    if visible_fraction >= 0.65:
        return 2
    return 3


def garment_annotation(
    garment: GarmentClass, box: BoxXYXY, style: int, visible_fraction: float
) -> dict[str, object]:
    """One ``itemN`` record; ``box`` is ``[x1, y1, x2, y2]`` in pixels, ``x2``/``y2`` exclusive."""
    return {
        "category_id": garment.category_id,
        "category_name": garment.category_name,
        "bounding_box": [int(value) for value in box],
        "style": int(style),
        "scale": 1,
        "occlusion": occlusion_level(visible_fraction),
        "zoom_in": 1,
        "viewpoint": 2,
        "segmentation": [],
        "landmarks": [],
    }


def image_annotation(
    source: ImageSource, pair_id: int, garments: Sequence[dict[str, object]]
) -> dict[str, object]:
    """The record of one image, its garments numbered ``item1``, ``item2``, … in the given order."""
    record: dict[str, object] = {"source": source, "pair_id": int(pair_id)}
    for number, garment in enumerate(garments, start=1):
        record[f"item{number}"] = garment
    return record
