"""Catalog garments: a 28x28 Fashion-MNIST image rendered at ~224 px in a colour and a pattern.

The grey intensity gives both the garment's shape (its mask, holes filled) and its shading; the
colour and pattern are painted in the garment's own coordinates, so every later warp moves them with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, ImageFilter

#: Fashion-MNIST pixels above this grey level belong to the garment.
_GARMENT_GREY = 2
#: Cutouts are rendered at 28 * this factor pixels.
UPSCALE = 8


@dataclass(frozen=True)
class Colour:
    """A named catalog colour; ``rgb`` in 0..255."""

    name: str
    rgb: tuple[int, int, int]

    @property
    def is_dark(self) -> bool:
        r, g, b = self.rgb
        return 0.299 * r + 0.587 * g + 0.114 * b < 128


PALETTE: tuple[Colour, ...] = (
    Colour("red", (196, 32, 44)),
    Colour("burgundy", (118, 24, 44)),
    Colour("navy", (30, 42, 92)),
    Colour("blue", (44, 96, 200)),
    Colour("teal", (22, 128, 138)),
    Colour("green", (44, 128, 64)),
    Colour("olive", (112, 116, 48)),
    Colour("yellow", (232, 192, 44)),
    Colour("orange", (228, 120, 32)),
    Colour("pink", (232, 124, 164)),
    Colour("purple", (112, 52, 140)),
    Colour("brown", (112, 72, 42)),
    Colour("beige", (214, 194, 160)),
    Colour("grey", (128, 128, 132)),
    Colour("black", (36, 36, 40)),
)

_LIGHT_ACCENT = (242, 238, 228)
_DARK_ACCENT = (30, 34, 58)


class Pattern(StrEnum):
    PLAIN = "plain"
    STRIPES = "stripes"
    DOTS = "dots"
    CHECKS = "checks"
    ZIGZAG = "zigzag"
    PLAID = "plaid"
    BLOTCHES = "blotches"

    @property
    def adjective(self) -> str:
        """The word a product title uses ("" for plain)."""
        return {
            "plain": "",
            "stripes": "striped",
            "dots": "polka-dot",
            "checks": "checked",
            "zigzag": "zigzag",
            "plaid": "plaid",
            "blotches": "mottled",
        }[self.value]


@dataclass(frozen=True)
class GarmentLook:
    """What makes a catalog item distinguishable: its colour and pattern (period in cutout pixels)."""

    colour: Colour
    pattern: Pattern
    period: float
    angle_deg: float
    phase: tuple[float, float]

    @property
    def accent_rgb(self) -> tuple[int, int, int]:
        """The pattern's second colour: light on dark garments, dark on light ones."""
        return _LIGHT_ACCENT if self.colour.is_dark else _DARK_ACCENT


def draw_look(
    rng: np.random.Generator,
    palette: Sequence[Colour] = PALETTE,
    patterns: Sequence[Pattern] = (Pattern.PLAIN, Pattern.STRIPES, Pattern.DOTS, Pattern.CHECKS),
) -> GarmentLook:
    """A random colour of ``palette`` and pattern of ``patterns`` (a style's, see styles.py)."""
    colour = palette[int(rng.integers(len(palette)))]
    pattern = patterns[int(rng.integers(len(patterns)))]
    return GarmentLook(
        colour=colour,
        pattern=pattern,
        period=float(rng.uniform(14.0, 26.0)),
        angle_deg=float(rng.choice([0.0, 0.0, 90.0, 45.0]) + rng.uniform(-6.0, 6.0)),
        phase=(float(rng.uniform()), float(rng.uniform())),
    )


@dataclass(frozen=True)
class Cutout:
    """A garment with its alpha: ``rgb`` (H, W, 3) and ``alpha`` (H, W), float32 in 0..1.

    ``alpha`` is exactly 0 where the garment is not; ``rgb`` there is meaningless.
    """

    rgb: np.ndarray
    alpha: np.ndarray

    @property
    def height(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def width(self) -> int:
        return int(self.alpha.shape[1])


def _grow(mask: np.ndarray, outside: bool) -> np.ndarray:
    """Dilate by one pixel (8-neighbourhood); pixels beyond the border count as ``outside``."""
    padded = np.pad(mask, 1, constant_values=outside)
    height, width = mask.shape
    grown = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown


def _close(mask: np.ndarray) -> np.ndarray:
    """Morphological closing (3x3): seals dark seams up to 2 px wide; the image border stays garment."""
    return ~_grow(~_grow(mask, outside=False), outside=False)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of ``mask`` (drops stray specks of noise)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    sizes = [0]
    height, width = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        label = len(sizes)
        labels[start] = label
        stack, size = [start], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny in range(max(y - 1, 0), min(y + 2, height)):
                for nx in range(max(x - 1, 0), min(x + 2, width)):
                    if mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = label
                        stack.append((ny, nx))
        sizes.append(size)
    return labels == int(np.argmax(sizes)) if len(sizes) > 1 else mask.copy()


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` plus every background pixel that background pixels do not connect to the border."""
    background = ~mask
    outside = np.zeros_like(mask)
    outside[[0, -1], :] = background[[0, -1], :]
    outside[:, [0, -1]] = background[:, [0, -1]]
    while True:
        grown = outside.copy()
        grown[1:, :] |= outside[:-1, :]
        grown[:-1, :] |= outside[1:, :]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= background
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


def garment_mask(grey: np.ndarray, *, seal_seams: bool = True) -> np.ndarray:
    """The garment's pixels in a Fashion-MNIST image, (28, 28) bool.

    Fashion-MNIST draws dark parts of a garment as black as its background, so: pixels above a low
    grey level, dark seams sealed (``seal_seams``; off for trousers, whose leg gap is that narrow),
    the largest connected region only, and enclosed holes filled.
    """
    mask = grey > _GARMENT_GREY
    if seal_seams:
        mask = _close(mask)
    return _fill_holes(_largest_component(mask))


def _smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _soft_band(distance: np.ndarray, half_width: float) -> np.ndarray:
    """1 inside ``|distance| < half_width``, 0 outside, with a one-pixel anti-aliased edge."""
    return np.clip(half_width - np.abs(distance) + 0.5, 0.0, 1.0)


def pattern_coverage(look: GarmentLook, size: int) -> np.ndarray:
    """(size, size) float32 in 0..1: where the accent colour covers the base colour."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.deg2rad(look.angle_deg)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    period = look.period
    du = (np.mod(u / period + look.phase[0], 1.0) - 0.5) * period
    dv = (np.mod(v / period + look.phase[1], 1.0) - 0.5) * period
    if look.pattern is Pattern.STRIPES:
        return _soft_band(dv, 0.22 * period)
    if look.pattern is Pattern.DOTS:
        return np.clip(0.26 * period - np.hypot(du, dv) + 0.5, 0.0, 1.0)
    if look.pattern is Pattern.CHECKS:
        return 0.5 * (_soft_band(du, 0.25 * period) + _soft_band(dv, 0.25 * period))
    if look.pattern is Pattern.ZIGZAG:  # bands whose centre line is a triangle wave
        wave = np.abs(np.mod(u / period + look.phase[0], 1.0) - 0.5) * 2.0 - 0.5
        bent = v + wave * 0.6 * period
        return _soft_band((np.mod(bent / period + look.phase[1], 1.0) - 0.5) * period, 0.2 * period)
    if look.pattern is Pattern.PLAID:  # wide soft bands both ways, and thin lines between them
        wide = 0.45 * (_soft_band(du, 0.3 * period) + _soft_band(dv, 0.3 * period))
        thin_u = _soft_band((np.mod(u / period + look.phase[0] + 0.5, 1.0) - 0.5) * period, 0.05 * period)
        thin_v = _soft_band((np.mod(v / period + look.phase[1] + 0.5, 1.0) - 0.5) * period, 0.05 * period)
        return np.clip(wide + 0.8 * np.maximum(thin_u, thin_v), 0.0, 1.0).astype(np.float32)
    if look.pattern is Pattern.BLOTCHES:  # soft irregular patches: a few crossed waves, thresholded
        a, b = 2 * np.pi * look.phase[0], 2 * np.pi * look.phase[1]
        field = (
            np.sin(u / period * 2.1 + a)
            + np.sin(v / period * 1.7 + b)
            + np.sin((u + v) / period * 1.3 + a + b)
        )
        return _smoothstep(field, 0.6, 1.1).astype(np.float32)
    return np.zeros((size, size), dtype=np.float32)


def render_garment(grey: np.ndarray, look: GarmentLook, *, seal_seams: bool = True) -> Cutout:
    """Upscale a (28, 28) Fashion-MNIST image 8x, paint it in ``look`` and crop it to the garment.

    The mask is upscaled bicubic, blurred and re-thresholded with a smooth step (clean, anti-aliased
    edges); the shading is the upscaled grey, blurred then sharpened, normalised per garment so that
    dark garments keep their detail.
    """
    size = grey.shape[0] * UPSCALE
    mask = Image.fromarray(garment_mask(grey, seal_seams=seal_seams).astype(np.uint8) * 255)
    mask = mask.resize((size, size), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(UPSCALE / 1.8))
    alpha = _smoothstep(np.asarray(mask, dtype=np.float32) / 255.0, 0.38, 0.62).astype(np.float32)
    alpha[alpha < 1.0 / 64] = 0.0

    shade_image = Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8))
    shade_image = shade_image.resize((size, size), Image.Resampling.BICUBIC)
    shade_image = shade_image.filter(ImageFilter.GaussianBlur(1.2)).filter(
        ImageFilter.UnsharpMask(radius=3, percent=80, threshold=2)
    )
    intensity = np.asarray(shade_image, dtype=np.float32)
    reference = max(float(np.percentile(intensity[alpha > 0.5], 95)), 24.0) if (alpha > 0.5).any() else 255.0
    shade = 0.42 + 0.58 * np.clip(intensity / reference, 0.0, 1.12)

    coverage = pattern_coverage(look, size)[..., None]
    base = np.asarray(look.colour.rgb, dtype=np.float32) / 255.0
    accent = np.asarray(look.accent_rgb, dtype=np.float32) / 255.0
    rgb = np.clip((base * (1.0 - coverage) + accent * coverage) * shade[..., None], 0.0, 1.0)

    rows, cols = np.nonzero(alpha)
    margin = 2
    y1, y2 = max(int(rows.min()) - margin, 0), min(int(rows.max()) + 1 + margin, size)
    x1, x2 = max(int(cols.min()) - margin, 0), min(int(cols.max()) + 1 + margin, size)
    return Cutout(
        rgb=np.ascontiguousarray(rgb[y1:y2, x1:x2], dtype=np.float32),
        alpha=np.ascontiguousarray(alpha[y1:y2, x1:x2], dtype=np.float32),
    )
