"""Crop preprocessing for the embedders: resize policy, normalisation, batching into tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from clothes_search.settings import ResizeMode

_INTERPOLATION = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """How a crop becomes a model input. Part of the model signature.

    ``mean``/``std`` apply to pixel values scaled to [0, 1].
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: ResizeMode = ResizeMode.LETTERBOX
    interpolation: str = "bilinear"

    def describe(self) -> dict[str, object]:
        data = asdict(self)
        data["resize_mode"] = str(self.resize_mode)
        data["mean"] = [round(v, 6) for v in self.mean]
        data["std"] = [round(v, 6) for v in self.std]
        return data


def _resize(image: Image.Image, prep: Preprocessing) -> Image.Image:
    size, resample = prep.size, _INTERPOLATION[prep.interpolation]
    width, height = image.size
    match prep.resize_mode:
        case ResizeMode.STRETCH:
            return image.resize((size, size), resample)
        case ResizeMode.CENTER_CROP:
            scale = size / min(width, height)
            resized = image.resize(
                (max(size, round(width * scale)), max(size, round(height * scale))), resample
            )
            left = (resized.width - size) // 2
            top = (resized.height - size) // 2
            return resized.crop((left, top, left + size, top + size))
        case ResizeMode.LETTERBOX:
            scale = size / max(width, height)
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
            fill = tuple(round(m * 255) for m in prep.mean)  # pads become ~0 after normalisation
            canvas = Image.new("RGB", (size, size), fill)
            canvas.paste(image.resize((new_w, new_h), resample), ((size - new_w) // 2, (size - new_h) // 2))
            return canvas
    raise ValueError(f"unknown resize mode {prep.resize_mode}")


def to_array(images: Sequence[Image.Image], prep: Preprocessing) -> np.ndarray:
    """RGB crops -> float32 array (N, 3, size, size), normalised; one buffer for the whole batch."""
    pixels = np.empty((len(images), prep.size, prep.size, 3), dtype=np.uint8)
    for index, image in enumerate(images):
        pixels[index] = np.asarray(_resize(image.convert("RGB"), prep), dtype=np.uint8)
    batch = pixels.transpose(0, 3, 1, 2).astype(np.float32)  # one copy, NCHW
    batch /= np.float32(255.0)
    batch -= np.asarray(prep.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    batch /= np.asarray(prep.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return batch


def to_batch(images: Sequence[Image.Image], prep: Preprocessing) -> torch.Tensor:
    """RGB crops -> float tensor (N, 3, size, size), normalised (see :func:`to_array`)."""
    return torch.from_numpy(to_array(images, prep))
