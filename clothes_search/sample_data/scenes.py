"""Consumer images: a pair's garments, transformed and degraded, composited onto a background."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clothes_search.sample_data.augment import (
    Warp,
    apply_warp,
    blur,
    jpeg_noise,
    sensor_noise,
    shift_lighting,
)
from clothes_search.sample_data.compositing import Layer, Scene, settle_scene
from clothes_search.sample_data.garments import Cutout
from clothes_search.sample_data.styles import Defects

#: (width, height) of a consumer image.
CONSUMER_SIZE = (640, 480)
#: A garment showing less than this share of itself is left out of the image.
MIN_VISIBLE = 0.4
_ATTEMPTS = 8


def degrade(cutout: Cutout, rng: np.random.Generator, scale: float, defects: Defects) -> Cutout:
    """The garment as a consumer photo shows it: warped, re-lit, maybe blurred, with sensor and JPEG
    noise, each within the ranges of ``defects`` (its style's)."""
    limit = 2.2 * defects.rotation_sd
    warp = Warp(
        scale=scale,
        angle_deg=float(np.clip(rng.normal(0.0, defects.rotation_sd), -limit, limit)),
        corner_jitter=tuple((float(dx), float(dy)) for dx, dy in rng.uniform(-0.07, 0.07, size=(4, 2))),
        mirror=bool(rng.uniform() < 0.5),
    )
    garment = apply_warp(cutout, warp)
    gain = defects.colour_gain
    r, g, b = (float(value) for value in rng.uniform(1.0 - gain, 1.0 + gain, size=3))
    garment = shift_lighting(
        garment,
        gains=(r, g, b),
        brightness=float(rng.uniform(*defects.brightness)),
        gradient=(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3))),
    )
    if rng.uniform() < defects.blur_probability:
        garment = blur(garment, float(rng.uniform(*defects.blur_radius)))
    if defects.noise_sd[1] > 0:
        garment = sensor_noise(garment, rng, float(rng.uniform(*defects.noise_sd)))
    return jpeg_noise(garment, int(rng.integers(*defects.jpeg_quality)))


def _background_occluder(background: np.ndarray, layer: Layer, rng: np.random.Generator) -> Layer:
    """An opaque band of the bare background over 20–45 % of one side of ``layer``: it passes behind."""
    height, width = background.shape[:2]
    h, w = layer.alpha.shape
    share = rng.uniform(0.2, 0.45)
    side = int(rng.integers(4))
    x1, y1, x2, y2 = layer.x, layer.y, layer.x + w, layer.y + h
    if side == 0:
        x2 = x1 + int(w * share)
    elif side == 1:
        x1 = x2 - int(w * share)
    elif side == 2:
        y2 = y1 + int(h * share)
    else:
        y1 = y2 - int(h * share)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if x1 >= x2 or y1 >= y2:
        x1, y1, x2, y2 = 0, 0, 1, 1
    rgb = background[y1:y2, x1:x2].copy()
    return Layer(rgb=rgb, alpha=np.ones(rgb.shape[:2], dtype=np.float32), x=x1, y=y1)


def _layout(
    garments: Sequence[Cutout],
    has_distractor: bool,
    rng: np.random.Generator,
    defects: Defects,
    *,
    plain: bool,
) -> list[tuple[Layer, int]]:
    """Place each garment in its own vertical slot (the distractor maybe over a pair garment).

    Returns ``(layer, garment index)`` bottom first. ``plain`` places without overlaps by design.
    """
    width, height = CONSUMER_SIZE
    count = len(garments)
    pair_count = count - 1 if has_distractor else count
    overlap_distractor = has_distractor and not plain and rng.uniform() < 0.5
    slots = count - 1 if overlap_distractor else count
    slot_width = width / slots
    slot_order = [int(slot) for slot in rng.permutation(slots)]
    placed: list[tuple[Layer, int]] = []
    for index, cutout in enumerate(garments):
        is_distractor = has_distractor and index == count - 1
        target_height = height * rng.uniform(0.5, 0.8) * (0.85 if pair_count >= 3 else 1.0)
        max_width = slot_width * (0.9 if plain else 1.05)
        garment = degrade(cutout, rng, min(target_height / cutout.height, max_width / cutout.width), defects)
        if is_distractor and overlap_distractor:
            anchor, _ = placed[int(rng.integers(len(placed)))]
            direction = 1.0 if rng.uniform() < 0.5 else -1.0
            centre_x = (
                anchor.x + anchor.alpha.shape[1] / 2 + direction * rng.uniform(0.45, 0.75) * garment.width
            )
        else:
            slot = slot_order[index]
            centre_x = (slot + 0.5 + (0.0 if plain else rng.uniform(-0.12, 0.12))) * slot_width
        centre_y = height * rng.uniform(0.42, 0.58)
        x = round(centre_x - garment.width / 2)
        y = round(centre_y - garment.height / 2)
        placed.append((Layer(rgb=garment.rgb, alpha=garment.alpha, x=x, y=y), index))
    if overlap_distractor:
        pair_layers = placed[:-1]
        order = [int(i) for i in rng.permutation(len(pair_layers))]
        return [pair_layers[i] for i in order] + [placed[-1]]
    order = [int(i) for i in rng.permutation(len(placed))]
    return [placed[i] for i in order]


def compose_consumer_scene(
    background: np.ndarray,
    garments: Sequence[Cutout],
    rng: np.random.Generator,
    *,
    has_distractor: bool,
    defects: Defects,
) -> Scene:
    """Composite the garments (the last one is a distractor if ``has_distractor``) onto ``background``.

    Occlusion comes from neighbouring garments, the image border, the distractor and, sometimes, a band
    of background in front of one garment. A garment under :data:`MIN_VISIBLE` is left out; layouts
    are redrawn until at least one pair garment (not the distractor) shows, the last try without any
    deliberate overlap.
    """
    pair_count = len(garments) - 1 if has_distractor else len(garments)
    for attempt in range(_ATTEMPTS):
        plain = attempt == _ATTEMPTS - 1
        placed = _layout(garments, has_distractor, rng, defects, plain=plain)
        layers = [layer for layer, _ in placed]
        owners: list[int | None] = [index for _, index in placed]
        if not plain and rng.uniform() < 0.3:
            pair_layers = [layer for layer, index in placed if index < pair_count]
            target = pair_layers[int(rng.integers(len(pair_layers)))]
            layers.append(_background_occluder(background, target, rng))
            owners.append(None)
        scene = settle_scene(background, layers, owners, min_visible=MIN_VISIBLE)
        if any(garment.source_index < pair_count for garment in scene.garments):
            return scene
    return scene
