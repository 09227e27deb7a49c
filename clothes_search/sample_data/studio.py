"""Shop images: one garment centred on a studio backdrop (near-white or tinted), with small variations."""

from __future__ import annotations

import numpy as np

from clothes_search.sample_data.augment import Warp, apply_warp, shift_lighting
from clothes_search.sample_data.compositing import Layer, Scene, settle_scene
from clothes_search.sample_data.garments import Cutout

#: (width, height) of a shop image.
SHOP_SIZE = (300, 400)


def studio_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A near-white backdrop: a slight tint, darker towards the floor, a soft vignette. (H, W, 3) float32."""
    tone = rng.uniform(0.90, 0.985)
    tint = 1.0 + rng.uniform(-0.015, 0.015, size=3)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    floor = 1.0 - rng.uniform(0.0, 0.07) * (ys / (height - 1))
    radius = np.hypot((xs / (width - 1) - 0.5) * 1.2, ys / (height - 1) - 0.5)
    vignette = 1.0 - rng.uniform(0.0, 0.06) * radius**2
    shade = (tone * floor * vignette)[..., None] * tint.astype(np.float32)
    return np.clip(shade, 0.0, 1.0).astype(np.float32)


def tinted_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A pastel paper backdrop of a random hue, lit from above with a soft floor shadow. (H, W, 3)."""
    hue = rng.uniform(0.55, 0.95, size=3).astype(np.float32)
    hue = hue / hue.max() * np.float32(rng.uniform(0.8, 0.95))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 1.0 - rng.uniform(0.05, 0.18) * (ys / (height - 1)) ** 1.5
    side = 1.0 + rng.uniform(-0.06, 0.06) * (xs / (width - 1) - 0.5)
    return np.clip((light * side)[..., None] * hue, 0.0, 1.0).astype(np.float32)


STUDIOS = {"light": studio_background, "tinted": tinted_background}


def compose_shop_scene(cutout: Cutout, rng: np.random.Generator, studio: str = "light") -> Scene:
    """The garment fitted to ~70–85 % of the frame, a little shifted, tilted and re-lit, on a backdrop
    of the ``studio`` kind (:data:`STUDIOS`)."""
    width, height = SHOP_SIZE
    background = STUDIOS[studio](rng, width, height)
    fit = min(0.84 * width / cutout.width, 0.86 * height / cutout.height)
    warp = Warp(
        scale=float(fit * rng.uniform(0.84, 1.0)),
        angle_deg=float(rng.uniform(-2.5, 2.5)),
        corner_jitter=tuple((float(dx), float(dy)) for dx, dy in rng.uniform(-0.01, 0.01, size=(4, 2))),
    )
    garment = apply_warp(cutout, warp)
    garment = shift_lighting(
        garment,
        gains=tuple(float(g) for g in rng.uniform(0.97, 1.03, size=3)),
        brightness=float(rng.uniform(0.94, 1.08)),
        gradient=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.06, 0.06))),
    )
    x = round((width - garment.width) / 2 + rng.uniform(-0.04, 0.04) * width)
    y = round((height - garment.height) / 2 + rng.uniform(-0.03, 0.03) * height)
    layer = Layer(rgb=garment.rgb, alpha=garment.alpha, x=x, y=y)
    return settle_scene(background, [layer], [0], min_visible=0.0)
