"""Augmentations for the street-vs-shop shift, on PIL images, driven by one seeded ``random.Random``.

A consumer photo shows the garment off-centre, tilted, in other light, blurred, recompressed and partly
hidden; a shop photo is centred, frontal and clean. :class:`StreetShopAugment` makes a training view of a
:class:`~clothes_search.training.embedder.crops.GarmentCrop` by applying, each with its probability:

1. a random resized crop *around the box* (each side moved by up to ``box_jitter`` of the box size, taken
   from the context kept around the garment), always;
2. a horizontal flip;
3. a small rotation and a perspective warp (camera angle);
4. colour jitter: brightness, contrast, saturation and a *small* hue shift (colour is an identity cue);
5. Gaussian blur or a down-and-up rescale (low resolution, motion);
6. JPEG re-compression at a low quality (PIL's ``quality``);
7. random erasing of a rectangle with noise or a flat colour (occlusion by an arm, a bag, a person).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image, ImageEnhance, ImageFilter

from clothes_search.training.embedder.crops import PIPELINE_CROP_PADDING, GarmentCrop
from ingestion.crops import crop_boxes
from ingestion.detection import Box

_GREY = (127, 127, 127)


@dataclass(frozen=True)
class AugmentSettings:
    """Strengths and probabilities of :class:`StreetShopAugment`'s steps."""

    box_jitter: float = 0.12
    flip: float = 0.5
    rotate: float = 0.4
    max_degrees: float = 10.0
    perspective: float = 0.3
    perspective_distortion: float = 0.15
    color: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.02
    blur: float = 0.3
    max_blur_radius: float = 1.5
    downscale: float = 0.2
    jpeg: float = 0.4
    jpeg_quality: tuple[int, int] = (20, 75)
    erase: float = 0.3
    erase_area: tuple[float, float] = (0.03, 0.15)


class StreetShopAugment:
    """``augment(crop, rng)`` -> one augmented RGB view of the garment (see the module docstring)."""

    def __init__(
        self, settings: AugmentSettings | None = None, padding: float = PIPELINE_CROP_PADDING
    ) -> None:
        self.settings = settings or AugmentSettings()
        self.padding = padding

    def __call__(self, crop: GarmentCrop, rng: random.Random) -> Image.Image:
        s = self.settings
        image = self._jittered_crop(crop, rng)
        if rng.random() < s.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < s.rotate:
            image = image.rotate(
                rng.uniform(-s.max_degrees, s.max_degrees), Image.Resampling.BILINEAR, fillcolor=_GREY
            )
        if rng.random() < s.perspective:
            image = _perspective(image, rng, s.perspective_distortion)
        if rng.random() < s.color:
            image = self._color(image, rng)
        if rng.random() < s.blur:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, s.max_blur_radius)))
        if rng.random() < s.downscale:
            image = _downscale(image, rng.uniform(0.3, 0.7))
        if rng.random() < s.jpeg:
            image = _jpeg(image, rng.randint(*s.jpeg_quality))
        if rng.random() < s.erase:
            image = _erase(image, rng, s.erase_area)
        return image

    def _jittered_crop(self, crop: GarmentCrop, rng: random.Random) -> Image.Image:
        box, jitter = crop.box, self.settings.box_jitter
        dx, dy = box.width * jitter, box.height * jitter
        moved = Box(
            box.x1 + rng.uniform(-dx, dx),
            box.y1 + rng.uniform(-dy, dy),
            box.x2 + rng.uniform(-dx, dx),
            box.y2 + rng.uniform(-dy, dy),
        )
        if moved.x2 - moved.x1 < 2 or moved.y2 - moved.y1 < 2:
            moved = box
        return crop_boxes(crop.context, [moved], self.padding)[0]

    def _color(self, image: Image.Image, rng: random.Random) -> Image.Image:
        s = self.settings
        steps = [
            lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(1 - s.brightness, 1 + s.brightness)),
            lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(1 - s.contrast, 1 + s.contrast)),
            lambda im: ImageEnhance.Color(im).enhance(rng.uniform(1 - s.saturation, 1 + s.saturation)),
            lambda im: TF.adjust_hue(im, rng.uniform(-s.hue, s.hue)),
        ]
        rng.shuffle(steps)
        for step in steps:
            image = step(image)
        return image


def _perspective(image: Image.Image, rng: random.Random, distortion: float) -> Image.Image:
    width, height = image.size
    dx, dy = width * distortion / 2, height * distortion / 2
    corners = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
    signs = [(1, 1), (-1, 1), (-1, -1), (1, -1)]  # each corner moves inwards
    moved = [
        [x + sx * rng.uniform(0, dx), y + sy * rng.uniform(0, dy)]
        for (x, y), (sx, sy) in zip(corners, signs, strict=True)
    ]
    return TF.perspective(
        image, corners, moved, interpolation=TF.InterpolationMode.BILINEAR, fill=list(_GREY)
    )


def _downscale(image: Image.Image, factor: float) -> Image.Image:
    small = (max(8, round(image.width * factor)), max(8, round(image.height * factor)))
    return image.resize(small, Image.Resampling.BILINEAR).resize(image.size, Image.Resampling.BILINEAR)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _erase(image: Image.Image, rng: random.Random, area: tuple[float, float]) -> Image.Image:
    width, height = image.size
    target = rng.uniform(*area) * width * height
    aspect = rng.uniform(0.3, 3.3)
    w = min(width, max(1, round((target * aspect) ** 0.5)))
    h = min(height, max(1, round((target / aspect) ** 0.5)))
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    if rng.random() < 0.5:
        noise = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (h, w, 3), dtype=np.uint8)
        patch = Image.fromarray(noise)
    else:
        patch = Image.new("RGB", (w, h), tuple(rng.randint(0, 255) for _ in range(3)))
    erased = image.copy()
    erased.paste(patch, (left, top))
    return erased
