"""Ground-truth garment crops of a DeepFashion2-format split, labelled by identity.

An *identity* is ``(pair_id, style)`` with ``style > 0``: the same product in consumer (``user``) and
shop photos, which is the consumer-to-shop signal the embedder learns from. Style-0 garments belong to no
pair; they are kept only when asked for (as gallery distractors in evaluation), never as training classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from clothes_search.evaluation.deepfashion2 import ImageAnnotation
from clothes_search.settings import FusionSettings
from ingestion.crops import crop_boxes
from ingestion.detection import Box

Identity = tuple[int, int]

#: the padding the pipeline adds around a box before embedding it (``fusion.crop_padding``)
PIPELINE_CROP_PADDING: float = FusionSettings().crop_padding
#: how much image around the box a training crop keeps, so augmentation can shift and grow the box
CONTEXT_MARGIN = 0.25


@dataclass(frozen=True)
class GarmentCrop:
    """One annotated garment: the pipeline's crop of it, and the image region around it with its box in
    that region's pixels (for augmentations that move the box).

    ``identity`` is ``(pair_id, style)``, or None for a style-0 garment.
    """

    image_id: str
    item_key: str
    source: Literal["user", "shop"]
    category: str
    identity: Identity | None
    crop: Image.Image
    context: Image.Image
    box: Box


def _context_crop(image: Image.Image, box: Box, margin: float) -> tuple[Image.Image, Box]:
    region = box.padded(margin, image.width, image.height)
    left, top = int(region.x1), int(region.y1)
    right, bottom = max(left + 1, math.ceil(region.x2)), max(top + 1, math.ceil(region.y2))
    context = image.crop((left, top, right, bottom))
    return context, Box(box.x1 - left, box.y1 - top, box.x2 - left, box.y2 - top)


def split_crops(
    annotations: Sequence[ImageAnnotation],
    *,
    include_unpaired: bool = False,
    margin: float = CONTEXT_MARGIN,
    padding: float = PIPELINE_CROP_PADDING,
) -> list[GarmentCrop]:
    """Every garment of the split's images (style > 0 only unless ``include_unpaired``), in file order.

    ``crop`` is cut exactly as the ingestion pipeline cuts a box (``crop_boxes`` with ``padding``);
    ``context`` keeps ``margin`` of the box's size around it.
    """
    crops: list[GarmentCrop] = []
    for annotation in annotations:
        wanted = [item for item in annotation.items if item.style > 0 or include_unpaired]
        if not wanted:
            continue
        with Image.open(annotation.image_path) as opened:
            image = opened.convert("RGB")
        for item in wanted:
            box = Box(*item.box)
            context, box_in_context = _context_crop(image, box, margin)
            crops.append(
                GarmentCrop(
                    image_id=annotation.image_id,
                    item_key=item.key,
                    source=annotation.source,
                    category=item.category,
                    identity=(annotation.pair_id, item.style) if item.style > 0 else None,
                    crop=crop_boxes(image, [box], padding)[0],
                    context=context,
                    box=box_in_context,
                )
            )
    return crops


def identity_labels(crops: Sequence[GarmentCrop]) -> tuple[list[int], list[Identity]]:
    """Contiguous class labels ``0..C-1`` for the crops (all must have an identity) and the identities."""
    identities = sorted({crop.identity for crop in crops if crop.identity is not None})
    if any(crop.identity is None for crop in crops):
        raise ValueError("every training crop needs an identity (style > 0)")
    index = {identity: label for label, identity in enumerate(identities)}
    return [index[crop.identity] for crop in crops], identities  # type: ignore[index]
