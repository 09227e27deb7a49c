"""Cutting garment crops out of an image."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from ingestion.detection import Box


def crop_boxes(image: Image.Image, boxes: Sequence[Box], padding: float) -> list[Image.Image]:
    """Crop each xyxy pixel box, grown by ``padding`` (fraction of the box size) and clipped.

    A box that clips to nothing yields a 1x1 crop of its nearest pixel rather than failing.
    """
    crops: list[Image.Image] = []
    for box in boxes:
        padded = box.padded(padding, image.width, image.height)
        x1, y1 = int(padded.x1), int(padded.y1)
        x2, y2 = max(x1 + 1, round(padded.x2)), max(y1 + 1, round(padded.y2))
        x1, y1 = min(x1, image.width - 1), min(y1, image.height - 1)
        crops.append(image.crop((x1, y1, min(x2, image.width), min(y2, image.height))))
    return crops
