"""Alpha compositing of layers onto a background, what of each layer stays visible, and its tight box.

Images are float32 (H, W, 3) in 0..1; a layer's ``alpha`` is (h, w) in 0..1 and exactly 0 where the
layer has nothing. Layers are listed bottom first and may reach past the canvas edges.
Boxes are ``(x1, y1, x2, y2)`` in pixel-edge coordinates: ``x2``/``y2`` are one past the last
visible column/row, so ``0 <= x1 < x2 <= width`` and the width is ``x2 - x1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BoxXYXY = tuple[int, int, int, int]


@dataclass(frozen=True)
class Layer:
    """Pixels placed with their top-left corner at canvas position ``(x, y)`` (may be negative)."""

    rgb: np.ndarray
    alpha: np.ndarray
    x: int
    y: int

    def window(self, width: int, height: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
        """``(canvas slices, layer slices)`` of the part inside a ``width`` x ``height`` canvas, or None."""
        h, w = self.alpha.shape
        cx1, cy1 = max(self.x, 0), max(self.y, 0)
        cx2, cy2 = min(self.x + w, width), min(self.y + h, height)
        if cx1 >= cx2 or cy1 >= cy2:
            return None
        canvas = (slice(cy1, cy2), slice(cx1, cx2))
        own = (slice(cy1 - self.y, cy2 - self.y), slice(cx1 - self.x, cx2 - self.x))
        return canvas, own


def composite(background: np.ndarray, layers: Sequence[Layer]) -> np.ndarray:
    """Paint ``layers`` over a copy of ``background`` in order ("over" operator, straight alpha)."""
    height, width = background.shape[:2]
    out = background.astype(np.float32, copy=True)
    for layer in layers:
        window = layer.window(width, height)
        if window is None:
            continue
        canvas, own = window
        alpha = layer.alpha[own][..., None]
        out[canvas] = out[canvas] * (1.0 - alpha) + layer.rgb[own] * alpha
    return out


def visible_weights(width: int, height: int, layers: Sequence[Layer]) -> list[np.ndarray]:
    """Per layer, a (height, width) float32 map of how much of it shows in the composite.

    Layer k's weight at a pixel is its alpha times ``1 - alpha`` of every layer above it; it is
    exactly 0 where the layer is absent, off-canvas, or hidden by an opaque layer above.
    """
    uncovered = np.ones((height, width), dtype=np.float32)
    weights: list[np.ndarray] = [np.zeros((height, width), dtype=np.float32) for _ in layers]
    for index in range(len(layers) - 1, -1, -1):
        window = layers[index].window(width, height)
        if window is None:
            continue
        canvas, own = window
        alpha = layers[index].alpha[own]
        weights[index][canvas] = alpha * uncovered[canvas]
        uncovered[canvas] *= 1.0 - alpha
    return weights


def visible_fraction(layer: Layer, weight: np.ndarray) -> float:
    """The share of a layer's whole alpha (on and off the canvas) that shows, 0..1."""
    total = float(layer.alpha.sum(dtype=np.float64))
    return float(weight.sum(dtype=np.float64)) / total if total > 0 else 0.0


def tight_box(weight: np.ndarray) -> BoxXYXY | None:
    """The smallest box holding every pixel with ``weight > 0``, or None if there is none."""
    rows = np.flatnonzero(weight.any(axis=1))
    cols = np.flatnonzero(weight.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A 0..1 float image as uint8, rounded to nearest."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PlacedGarment:
    """A garment shown in a scene: its index among the inputs, its layer, its visible box and share."""

    source_index: int
    layer_index: int
    box: BoxXYXY
    visible_fraction: float


@dataclass(frozen=True)
class Scene:
    """A background, the layers painted over it (bottom first) and the garments that show."""

    background: np.ndarray
    layers: tuple[Layer, ...]
    garments: tuple[PlacedGarment, ...]

    def render(self) -> np.ndarray:
        """The composite, float32 (H, W, 3) in 0..1."""
        return composite(self.background, self.layers)


def settle_scene(
    background: np.ndarray,
    layers: Sequence[Layer],
    garment_of_layer: Sequence[int | None],
    *,
    min_visible: float,
) -> Scene:
    """Drop garments that show less than ``min_visible`` of themselves and box the others.

    ``garment_of_layer[i]`` is the input garment that layer ``i`` shows, or None for an occluder. The
    least visible garment is dropped first and visibility is measured again, since hiding less can
    bring another garment back over the limit. Garments come out ordered by their input index.
    """
    height, width = background.shape[:2]
    kept = list(range(len(layers)))
    while True:
        current = [layers[i] for i in kept]
        weights = visible_weights(width, height, current)
        shares = {
            index: visible_fraction(layers[index], weight)
            for index, weight in zip(kept, weights, strict=True)
            if garment_of_layer[index] is not None
        }
        too_hidden = [index for index, share in shares.items() if share < min_visible]
        if not too_hidden:
            break
        kept.remove(min(too_hidden, key=lambda index: (shares[index], index)))
    placed = []
    for position, index in enumerate(kept):
        source = garment_of_layer[index]
        box = tight_box(weights[position])
        if source is not None and box is not None:
            placed.append(PlacedGarment(source, position, box, shares[index]))
    placed.sort(key=lambda garment: garment.source_index)
    return Scene(background=background, layers=tuple(current), garments=tuple(placed))
