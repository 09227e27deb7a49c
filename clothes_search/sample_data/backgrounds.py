"""Backgrounds of consumer images: crops of real photos, or procedural scenes drawn from a seed.

Each procedural kind is a family of its own (see styles.py): the seen style draws ``gradient`` and
``noise`` backgrounds, the unseen style ``tiles`` and ``waves``, so a model trained on one never saw
the other's places.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from PIL import Image

from clothes_search.sample_data.errors import SampleDataError

ProceduralBackground = Callable[[np.random.Generator, int, int], np.ndarray]


def background_crop(photo: Image.Image, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A ``width`` x ``height`` crop of ``photo``: zoomed 1–1.5x past covering, maybe mirrored, re-lit."""
    cover = max(width / photo.width, height / photo.height)
    zoom = cover * rng.uniform(1.0, 1.5)
    size = (max(width, int(np.ceil(photo.width * zoom))), max(height, int(np.ceil(photo.height * zoom))))
    scaled = photo.resize(size, Image.Resampling.BICUBIC)
    x = int(rng.integers(0, size[0] - width + 1))
    y = int(rng.integers(0, size[1] - height + 1))
    crop = np.asarray(scaled.crop((x, y, x + width, y + height)), dtype=np.float32) / 255.0
    if rng.uniform() < 0.5:
        crop = crop[:, ::-1]
    gains = rng.uniform(0.94, 1.06, size=3).astype(np.float32) * np.float32(rng.uniform(0.85, 1.1))
    return np.ascontiguousarray(np.clip(crop * gains, 0.0, 1.0), dtype=np.float32)


def _random_colour(rng: np.random.Generator, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    return rng.uniform(low, high, size=3).astype(np.float32)


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs / max(width - 1, 1), ys / max(height - 1, 1)


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Value noise in 0..1: a coarse random grid upsampled bicubically. (H, W) float32."""
    coarse = (rng.uniform(0.0, 255.0, size=(cells, cells))).astype(np.uint8)
    smooth = Image.fromarray(coarse, "L").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(smooth, dtype=np.float32) / 255.0


def gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A wall lit from one side: a linear blend of two colours at a random angle, a little grain."""
    xs, ys = _grid(width, height)
    angle = rng.uniform(0.0, 2 * np.pi)
    ramp = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)) + 0.5
    ramp = np.clip(ramp, 0.0, 1.0)[..., None]
    start, end = _random_colour(rng), _random_colour(rng)
    grain = rng.normal(0.0, 0.01, size=(height, width, 1)).astype(np.float32)
    return np.clip(start * (1 - ramp) + end * ramp + grain, 0.0, 1.0).astype(np.float32)


def noise(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Foliage or a crowd out of focus: smooth blobs of three colours at two scales."""
    colours = [_random_colour(rng) for _ in range(3)]
    coarse = _smooth_noise(rng, width, height, int(rng.integers(3, 7)))[..., None]
    fine = _smooth_noise(rng, width, height, int(rng.integers(12, 24)))[..., None]
    mix = colours[0] * (1 - coarse) + colours[1] * coarse
    mix = mix * (1 - 0.4 * fine) + colours[2] * 0.4 * fine
    return np.clip(mix, 0.0, 1.0).astype(np.float32)


def tiles(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A tiled floor or wall: rectangles of one hue in varied shades, with grout lines between them."""
    tile_w = int(rng.integers(24, 90))
    tile_h = int(tile_w * rng.uniform(0.5, 1.5))
    base = _random_colour(rng, 0.25, 0.85)
    grout = _random_colour(rng, 0.05, 0.95)
    ys, xs = np.mgrid[0:height, 0:width]
    offset = (ys // tile_h % 2) * (tile_w // 2) if rng.uniform() < 0.5 else 0
    column = (xs + offset) // tile_w
    row = ys // tile_h
    shades = rng.uniform(0.8, 1.15, size=(height // tile_h + 2, width // tile_w + 3)).astype(np.float32)
    image = base * shades[row, column][..., None]
    line = max(1, tile_w // 14)
    on_grout = ((xs + offset) % tile_w < line) | (ys % tile_h < line)
    image[on_grout] = grout
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def waves(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A curtain or sea: shaded sinusoidal folds of two colours, bent by a slow second wave."""
    xs, ys = _grid(width, height)
    folds = rng.uniform(4.0, 14.0)
    bend = rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * (ys * rng.uniform(0.5, 2.0) + rng.uniform()))
    phase = 2 * np.pi * (xs + bend) * folds
    light = (0.5 + 0.5 * np.sin(phase))[..., None]
    a, b = _random_colour(rng), _random_colour(rng)
    shade = 0.75 + 0.25 * light
    return np.clip((a * (1 - light) + b * light) * shade, 0.0, 1.0).astype(np.float32)


PROCEDURAL: Mapping[str, ProceduralBackground] = {
    "gradient": gradient,
    "noise": noise,
    "tiles": tiles,
    "waves": waves,
}


def procedural_background(kind: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A ``(height, width, 3)`` float32 background of one of :data:`PROCEDURAL`'s kinds."""
    try:
        draw = PROCEDURAL[kind]
    except KeyError:
        raise SampleDataError(
            f"unknown procedural background {kind!r}; one of {sorted(PROCEDURAL)}"
        ) from None
    return draw(rng, width, height)
