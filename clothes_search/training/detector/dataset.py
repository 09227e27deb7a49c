"""A DeepFashion2-format split as (image, target) pairs for torchvision detectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

from clothes_search.evaluation.deepfashion2 import ImageAnnotation

Target = dict[str, torch.Tensor]


def category_list(images: Sequence[ImageAnnotation]) -> list[str]:
    """The categories the split holds, by DeepFashion2 ``category_id``: our vocabulary's names."""
    by_id = {item.category_id: item.category for image in images for item in image.items}
    return [by_id[category_id] for category_id in sorted(by_id)]


class DetectionDataset(Dataset[tuple[torch.Tensor, Target]]):
    """Images of a split with their garments' boxes and labels.

    Item ``i`` is ``(image, {"boxes": (K, 4) float xyxy pixels, "labels": (K,) int64})``: ``image`` is
    ``(3, H, W)`` float in [0, 1], first shrunk so its longer side is at most ``image_size`` (the
    detector resizes to that anyway; shrinking first makes augmentation cheap). Label ``1 + j`` is
    ``categories[j]``; 0 is the background. Garments of other categories are left out. With
    probability ``mosaic`` an item is a 2 x 2 mosaic of four images instead (training only).
    """

    def __init__(
        self,
        images: Sequence[ImageAnnotation],
        categories: Sequence[str],
        image_size: int,
        transform: v2.Transform,
        mosaic: float = 0.0,
    ) -> None:
        self.images = list(images)
        self.labels = {name: index + 1 for index, name in enumerate(categories)}
        self.image_size = image_size
        self.transform = transform
        self.mosaic = mosaic

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, index: int, fit: tuple[int, int]) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
        """Image ``index`` shrunk to fit ``fit`` (width, height), with its boxes (scaled) and labels."""
        annotation = self.images[index]
        with Image.open(annotation.image_path) as raw:
            image = raw.convert("RGB")
        scale = min(1.0, fit[0] / image.width, fit[1] / image.height)
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
        items = [item for item in annotation.items if item.category in self.labels]
        boxes = torch.tensor([item.box for item in items], dtype=torch.float32).reshape(-1, 4) * scale
        labels = torch.tensor([self.labels[item.category] for item in items], dtype=torch.int64)
        return image, boxes, labels

    def _mosaic(self, index: int) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
        """Four images (``index`` and three drawn at random) in the quadrants of one canvas, each fitted
        to its quadrant (aspect kept, grey around): smaller garments in new company and new places."""
        width, height = round(self.image_size), round(self.image_size * 0.75)
        half = (width // 2, height // 2)
        others = torch.randint(len(self.images), (3,)).tolist()
        canvas = Image.new("RGB", (width, height), (127, 127, 127))
        all_boxes, all_labels = [], []
        for quadrant, source in enumerate([index, *others]):
            image, boxes, labels = self._load(source, half)
            x = (quadrant % 2) * half[0] + (half[0] - image.width) // 2
            y = (quadrant // 2) * half[1] + (half[1] - image.height) // 2
            canvas.paste(image, (x, y))
            all_boxes.append(boxes + torch.tensor([x, y, x, y], dtype=torch.float32))
            all_labels.append(labels)
        return canvas, torch.cat(all_boxes), torch.cat(all_labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        if self.mosaic > 0 and float(torch.rand(())) < self.mosaic:
            image, boxes, labels = self._mosaic(index)
        else:
            image, boxes, labels = self._load(index, (self.image_size, self.image_size))
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
            "labels": labels,
        }
        tensor, target = self.transform(tv_tensors.Image(pil_to_tensor(image)), target)
        return tensor.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor),
            "labels": target["labels"],
        }


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Detectors take lists: images of different sizes, a different number of boxes each."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
