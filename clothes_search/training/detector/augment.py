"""Image + box augmentation for detector training (torchvision ``transforms.v2``, boxes follow the image)."""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

#: the grey the zoom-out canvas is filled with: EfficientNet-Lite's input mean, so it normalises to ~0
_FILL = {tv_tensors.Image: (127, 127, 127), "others": 0}


def training_transform(image_size: int) -> v2.Transform:
    """Colour jitter, random zoom-out (garments get smaller, as in consumer photos), horizontal flip.

    Takes and returns ``(tv_tensors.Image uint8, {"boxes": BoundingBoxes, "labels": Tensor})``. The
    image comes out as float in [0, 1] with its longer side at most ``image_size`` (the size the detector
    works at, so a zoomed-out canvas is not resized twice); boxes left under 2 pixels wide or high are
    dropped.
    """
    return v2.Compose(
        [
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
            v2.RandomZoomOut(fill=_FILL, side_range=(1.0, 1.8), p=0.4),
            v2.Resize(size=None, max_size=image_size, antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.SanitizeBoundingBoxes(min_size=2.0),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def evaluation_transform() -> v2.Transform:
    """No augmentation: only the float conversion (and dropping degenerate boxes)."""
    return v2.Compose([v2.SanitizeBoundingBoxes(min_size=2.0), v2.ToDtype(torch.float32, scale=True)])
