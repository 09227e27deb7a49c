"""Backbone features of garment crops, and the cache of augmented views that makes frozen-backbone
training cheap.

With a frozen backbone only the projection head learns, so each crop's backbone features can be computed
once. :func:`view_features` computes ``views`` of every crop: view 0 is the clean pipeline crop, views
1..V-1 are :class:`~clothes_search.training.embedder.augment.StreetShopAugment` samples (seeded per crop
and view). Training then draws one cached view per sample and step: augmentation at the price of V
backbone passes per crop in total, rather than one per crop and step. The result can be stored in a
cache folder, keyed by everything that determines it (backbone weights, preprocessing, crops, views,
seed, augmentation settings).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from clothes_search.training.embedder.augment import StreetShopAugment
from clothes_search.training.embedder.crops import GarmentCrop
from ingestion.embedders.preprocess import Preprocessing, to_batch

Progress = Callable[[str], None]


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """float16 autocast on CUDA when ``amp``; a disabled context elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def image_batch(
    images: Sequence[Image.Image], preprocessing: Preprocessing, device: torch.device
) -> torch.Tensor:
    return to_batch(images, preprocessing).to(device, non_blocking=True)


@torch.no_grad()  # not inference_mode: the features feed the head's training
def backbone_features(
    backbone: torch.nn.Module,
    images: Sequence[Image.Image],
    preprocessing: Preprocessing,
    device: torch.device,
    *,
    amp: bool = False,
    batch_size: int = 32,
) -> torch.Tensor:
    """float32 features (N, F) of RGB crops, on the CPU."""
    outputs = []
    for start in range(0, len(images), batch_size):
        with autocast(device, amp):
            batch = image_batch(images[start : start + batch_size], preprocessing, device)
            outputs.append(backbone(batch).float().flatten(1).cpu())
    return torch.cat(outputs)


def augmented_views(
    crop: GarmentCrop, views: int, augment: StreetShopAugment, seed: int, index: int
) -> list[Image.Image]:
    """The clean crop, then ``views - 1`` augmented ones; the same (seed, index) gives the same views."""
    rng = random.Random(f"{seed}:{index}")
    return [crop.crop] + [augment(crop, rng) for _ in range(views - 1)]


def view_features(
    backbone: torch.nn.Module,
    crops: Sequence[GarmentCrop],
    preprocessing: Preprocessing,
    device: torch.device,
    *,
    views: int,
    augment: StreetShopAugment,
    seed: int,
    amp: bool = False,
    progress: Progress | None = None,
) -> torch.Tensor:
    """float32 features (N, views, F) of each crop's clean view and augmented views."""
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    per_crop: list[torch.Tensor] = []
    chunk = max(1, 64 // views)  # crops per forward batch
    started = time.monotonic()
    for start in range(0, len(crops), chunk):
        images = [
            image
            for index in range(start, min(start + chunk, len(crops)))
            for image in augmented_views(crops[index], views, augment, seed, index)
        ]
        features = backbone_features(backbone, images, preprocessing, device, amp=amp, batch_size=len(images))
        per_crop.extend(features.view(-1, views, features.shape[1]))
        if progress is not None and (start // chunk) % 20 == 19:
            done = min(start + chunk, len(crops))
            left = (time.monotonic() - started) / done * (len(crops) - done)
            progress(f"  backbone features: {done}/{len(crops)} crops x {views} views, ~{left:.0f} s left")
    return torch.stack(per_crop)


def cache_key(*parts: object) -> str:
    """A file-name-safe digest of everything that determines a feature cache."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def cached(path: Path | None, compute: Callable[[], torch.Tensor], progress: Progress) -> torch.Tensor:
    """``compute()``, read from / written to ``path`` when one is given."""
    if path is not None and path.is_file():
        progress(f"backbone features from the cache {path}")
        return torch.load(path, map_location="cpu", weights_only=True)
    features = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(features, partial)
        partial.replace(path)
    return features
