"""Per-garment photometric and geometric changes: warp, lighting, blur, JPEG noise.

Each function takes a :class:`Cutout` and explicit parameters and returns a new one; randomness stays
with the callers, which draw the parameters from their generator.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from clothes_search.sample_data.garments import Cutout

#: Transparent border kept around a warped cutout, so that a later blur has room to spread.
WARP_PADDING = 4
#: Alpha below this after resampling is resampling ringing, not garment.
_MIN_ALPHA = 4.0 / 255.0


def _to_rgba(cutout: Cutout) -> Image.Image:
    pixels = np.concatenate([cutout.rgb, cutout.alpha[..., None]], axis=2)
    return Image.fromarray(np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8), "RGBA")


def _from_rgba(image: Image.Image) -> Cutout:
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    alpha = pixels[..., 3].copy()
    alpha[alpha < _MIN_ALPHA] = 0.0
    return Cutout(rgb=np.ascontiguousarray(pixels[..., :3]), alpha=alpha)


@dataclass(frozen=True)
class Warp:
    """Scale (output height / input height), rotation (degrees, counter-clockwise), corner jitter.

    ``corner_jitter`` is (4, 2): per corner (top-left, top-right, bottom-right, bottom-left), an offset
    as a fraction of the scaled width and height; unequal offsets give a perspective change.
    """

    scale: float
    angle_deg: float = 0.0
    corner_jitter: tuple[tuple[float, float], ...] = ((0.0, 0.0),) * 4
    mirror: bool = False


def _perspective_coefficients(output_corners: np.ndarray, input_corners: np.ndarray) -> list[float]:
    """PIL's 8 coefficients mapping output pixel positions back to input positions."""
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(output_corners, input_corners, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return [float(c) for c in np.linalg.solve(np.asarray(rows, np.float64), np.asarray(rhs, np.float64))]


def apply_warp(cutout: Cutout, warp: Warp) -> Cutout:
    """Scale, rotate and perspective-warp a cutout in one bicubic resampling (premultiplied alpha)."""
    if warp.mirror:
        cutout = Cutout(
            np.ascontiguousarray(cutout.rgb[:, ::-1]), np.ascontiguousarray(cutout.alpha[:, ::-1])
        )
    w, h = cutout.width, cutout.height
    source = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    scaled = (source - [w / 2, h / 2]) * warp.scale
    angle = np.deg2rad(warp.angle_deg)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    target = scaled @ rotation.T + np.asarray(warp.corner_jitter, np.float64) * [
        w * warp.scale,
        h * warp.scale,
    ]
    target -= target.min(axis=0) - WARP_PADDING
    size = (int(np.ceil(target[:, 0].max())) + WARP_PADDING, int(np.ceil(target[:, 1].max())) + WARP_PADDING)
    coefficients = _perspective_coefficients(target, source)
    warped = _to_rgba(cutout).transform(
        size, Image.Transform.PERSPECTIVE, coefficients, resample=Image.Resampling.BICUBIC
    )
    return _from_rgba(warped)


def shift_lighting(
    cutout: Cutout, gains: tuple[float, float, float], brightness: float, gradient: tuple[float, float]
) -> Cutout:
    """Multiply colours by per-channel ``gains``, ``brightness`` and a linear ramp across the garment.

    ``gradient`` is the ramp's relative change from the left to the right edge and from top to bottom.
    """
    h, w = cutout.alpha.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = 1.0 + gradient[0] * (xs / max(w - 1, 1) - 0.5) + gradient[1] * (ys / max(h - 1, 1) - 0.5)
    factor = ramp[..., None] * (np.asarray(gains, np.float32) * brightness)
    return Cutout(rgb=np.clip(cutout.rgb * factor, 0.0, 1.0).astype(np.float32), alpha=cutout.alpha)


def blur(cutout: Cutout, radius: float) -> Cutout:
    """Gaussian blur of colours and alpha together (premultiplied, so edges do not darken)."""
    if radius <= 0:
        return cutout
    blurred = _to_rgba(cutout).convert("RGBa").filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
    return _from_rgba(blurred)


def jpeg_noise(cutout: Cutout, quality: int) -> Cutout:
    """Pass the colours through a JPEG round trip at ``quality``; the alpha is kept as it was."""
    rgb = cutout.rgb.copy()
    inside = cutout.alpha > 0
    if inside.any():
        rgb[~inside] = rgb[inside].mean(axis=0)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8), "RGB").save(
        buffer, format="JPEG", quality=int(quality)
    )
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32) / 255.0
    return Cutout(rgb=decoded, alpha=cutout.alpha)


def sensor_noise(cutout: Cutout, rng: np.random.Generator, sd: float) -> Cutout:
    """Add Gaussian noise of standard deviation ``sd`` (0..1 units) to every pixel and channel."""
    if sd <= 0:
        return cutout
    grain = rng.normal(0.0, sd, size=cutout.rgb.shape).astype(np.float32)
    return Cutout(rgb=np.clip(cutout.rgb + grain, 0.0, 1.0).astype(np.float32), alpha=cutout.alpha)
