"""Turn untrusted bytes into an RGB :class:`PIL.Image.Image`, safely and within a memory budget.

The format is sniffed from magic bytes (a Content-Type header or file extension is never
trusted) and Pillow is restricted to that one format. The pixel count is checked from the
header before any pixel is decoded; Pillow's own global decompression-bomb limit is neither
relied on nor changed, only caught as a backstop. Only the first frame is decoded; the result is
rotated upright from its EXIF orientation and converted to RGB with any transparency composited
on white.

Memory: an image whose longest side exceeds ``fetch.max_side`` is downscaled as it is decoded. A
JPEG is decoded at 1/2, 1/4 or 1/8 scale directly (``Image.draft``); any other format is decoded
at full size once, in its own mode, and then converted to RGB and resampled band by band, so no
second full-size copy (an RGBA, RGB, float or premultiplied one) ever exists. High bit depths
become 8-bit grey with integer or float32 arithmetic on one band at a time. The extra memory of a
decode is therefore about one full-size decoded frame in its stored mode (JPEG: at draft scale)
plus the RGB result, at most ``max_side`` squared pixels.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from clothes_search.settings import FetchSettings
from ingestion.errors import ImageDecodeError, ImageTooLargeError
from ingestion.images.sources import BYTES_LABEL

#: sniffed format name -> Pillow plugin name
SUPPORTED_FORMATS: dict[str, str] = {
    "JPEG": "JPEG",
    "PNG": "PNG",
    "GIF": "GIF",
    "WEBP": "WEBP",
    "BMP": "BMP",
    "TIFF": "TIFF",
}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_SIXTEEN_BIT_GAIN = 255.0 / 65535.0
_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {  # as ImageOps.exif_transpose
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})
_RESAMPLE = Image.Resampling.BICUBIC
_RESAMPLE_SUPPORT = 2.0  # half-width of the bicubic kernel, in output pixels (x the ratio in source rows)
_BAND_PIXELS = 1 << 17  # source pixels converted at a time while downscaling
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    MemoryError,
    ZeroDivisionError,
)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image and where it came from.

    ``original_size`` is the full-resolution (width, height) of the encoded image after EXIF
    orientation. ``image`` is that picture, upright, at most ``fetch.max_side`` pixels on its longest
    side, so ``image.size`` may be smaller; a box found on ``image`` is in the original's pixels once
    multiplied by :attr:`scale`.
    """

    image: Image.Image  #: mode RGB, upright
    source: str  #: the path or URL as given, or "<bytes>"
    format: str  #: JPEG, PNG, GIF, WEBP, BMP or TIFF (sniffed from the bytes)
    content_sha256: str  #: of the raw encoded bytes
    original_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Original pixels per decoded pixel: 1.0 when ``image`` is full size, else > 1.

        Taken on the longest side, where it is exact; the other side was rounded to whole pixels,
        so per axis it differs by less than half a decoded pixel (``original_size[i] / image.size[i]``
        is the exact per-axis factor).
        """
        return max(self.original_size) / max(self.image.size)


def sniff_format(data: bytes) -> str | None:
    """The supported image format the magic bytes announce, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def describe_content(data: bytes) -> str:
    """A human guess of what non-image bytes are ("an HTML document", "empty", "a PDF document"...)."""
    if not data:
        return "empty (0 bytes)"
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "an HTML document (often an error or login page served instead of the image)"
    if b"<svg" in head:
        return "an SVG vector image (not supported; export it as PNG)"
    if head.startswith(b"<?xml"):
        return "an XML document"
    if data.startswith(b"%PDF"):
        return "a PDF document"
    if head[:1] in (b"{", b"["):
        return "JSON or other text data"
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace")
        if brand in ("heic", "heix", "hevc", "heif", "mif1", "msf1"):
            return "a HEIC/HEIF image (not supported; convert it to JPEG)"
        if brand in ("avif", "avis"):
            return "an AVIF image (not supported; convert it to JPEG or PNG)"
        return "an MP4/QuickTime video"
    if data.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if data.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if data.startswith(b"\x00\x00\x01\x00"):
        return "a Windows icon (.ico, not supported)"
    if re.fullmatch(rb"[\x09\x0a\x0d\x20-\x7e]*", data[:256]):
        return "plain text"
    return f"unrecognised binary data (first bytes {data[:8].hex(' ')})"


def _pixel_error(width: int, height: int, settings: FetchSettings, source: str) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image {source!r} is {width}x{height} = {width * height:,} pixels, above the limit of "
        f"{settings.max_pixels:,} pixels (fetch.max_pixels); downscale it or raise fetch.max_pixels",
        source=source,
    )


def _bomb_error(exc: Exception, settings: FetchSettings, source: str) -> ImageTooLargeError:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(match.group(1)):,} pixels" if match else "too many pixels"
    return ImageTooLargeError(
        f"image {source!r} claims {size}, refused as a possible decompression bomb; the limit is "
        f"{settings.max_pixels:,} pixels (fetch.max_pixels)",
        source=source,
    )


def _depth_gain(im: Image.Image) -> float:
    """The factor taking ``im``'s 16/32-bit integer or float grey values onto 0..255.

    I;16: 65535 -> 255. I: 1 when its peak is <= 255, else 65535 -> 255 when the peak fits 16 bits,
    else peak -> 255. F: 255 when its peak is <= 1.0 (a 0..1 image), else 1. Computed once per image
    (``getextrema`` reads the pixels in place), so every band of an image is scaled alike.
    """
    if im.mode.startswith("I;16"):
        return _SIXTEEN_BIT_GAIN
    peak = float(im.getextrema()[1])
    if im.mode == "F":
        return 255.0 if peak <= 1.0 else 1.0
    if peak <= 255:
        return 1.0
    return _SIXTEEN_BIT_GAIN if peak <= 65535 else 255.0 / peak


def _high_depth_to_l(im: Image.Image, gain: float) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit grey: ``clip(round(value * gain), 0, 255)``.

    Integers use exact integer arithmetic in the smallest dtype that holds them (``round(v / 257)``
    for the 16-bit gain); floats use float32 in place, NaN as 0. One copy of ``im`` in that dtype.
    """
    values = np.asarray(im)
    if values.dtype.kind in "ui" and gain in (1.0, _SIXTEEN_BIT_GAIN):
        if gain == 1.0:
            return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
        wide = np.clip(values, 0, 65535).astype(np.uint32)
        wide += 128
        wide //= 257  # == round(v * 255 / 65535), never a tie
        return Image.fromarray(wide.astype(np.uint8))
    scaled = values.astype(np.float32)
    scaled *= np.float32(gain)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return Image.fromarray(scaled.astype(np.uint8))


def to_rgb(im: Image.Image, depth_gain: float | None = None) -> Image.Image:
    """Any Pillow mode -> RGB; transparency (alpha or palette/colour key) is composited on white.

    May return ``im`` itself when it is RGB already. ``depth_gain`` (see :func:`_depth_gain`)
    overrides the per-image scaling of 16/32-bit grey, for converting an image band by band.
    """
    if im.mode in _HIGH_DEPTH_MODES:
        im = _high_depth_to_l(im, _depth_gain(im) if depth_gain is None else depth_gain)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if im.mode == "RGB":
        return im
    return im.convert("RGB")


def _fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down to ``max_side`` on its longest side (unchanged if it fits already)."""
    width, height = size
    longest = max(width, height)
    if longest <= max_side:
        return size
    if width >= height:
        return max_side, max(1, round(height * max_side / longest))
    return max(1, round(width * max_side / longest)), max_side


def _downscale_to_rgb(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``im`` (any mode) converted to RGB and resampled to ``size``, a band of rows at a time.

    Equal (to rounding) to ``to_rgb(im).resize(size, BICUBIC)``: each band is cropped with enough
    rows around it for the kernel's support and resized with a ``box``, so the bands join without
    seams. Memory: ``im`` itself, the RGB result, and a band of about :data:`_BAND_PIXELS` pixels.
    """
    width, height = im.size
    out_width, out_height = size
    ratio = height / out_height
    margin = math.ceil(_RESAMPLE_SUPPORT * max(ratio, 1.0)) + 1
    band_rows = max(1, int(max(1, _BAND_PIXELS // width) / ratio))
    gain = _depth_gain(im) if im.mode in _HIGH_DEPTH_MODES else None
    out = Image.new("RGB", size)
    for top in range(0, out_height, band_rows):
        bottom = min(top + band_rows, out_height)
        src_top = max(0, math.floor(top * ratio) - margin)
        src_bottom = min(height, math.ceil(bottom * ratio) + margin)
        band = to_rgb(im.crop((0, src_top, width, src_bottom)), gain)
        box = (0.0, top * ratio - src_top, float(width), min(bottom * ratio, height) - src_top)
        out.paste(band.resize((out_width, bottom - top), _RESAMPLE, box=box), (0, top))
    return out


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8) of a loaded image; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:  # a broken EXIF block must not lose an otherwise good image
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE_FOR_ORIENTATION else 1


def decode_image(data: bytes, settings: FetchSettings, source: str = BYTES_LABEL) -> LoadedImage:
    """Decode untrusted image bytes into an upright RGB :class:`LoadedImage`.

    Raises :class:`ImageTooLargeError` above ``settings.max_bytes`` or, read from the header before
    any pixel is decoded, ``settings.max_pixels``; :class:`ImageDecodeError` for anything that is not
    a complete image of a supported format. The image is at most ``settings.max_side`` pixels on its
    longest side (see :attr:`LoadedImage.scale`).
    """
    if len(data) > settings.max_bytes:
        raise ImageTooLargeError(
            f"image {source!r} is {len(data):,} bytes, above the limit of {settings.max_bytes:,} bytes "
            "(fetch.max_bytes)",
            source=source,
        )
    if not data:
        raise ImageDecodeError(f"{source!r} is empty (0 bytes), not an image", source=source)
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageDecodeError(
            f"{source!r} is not a supported image: it looks like {describe_content(data)}; "
            f"supported formats: {', '.join(SUPPORTED_FORMATS)}",
            source=source,
        )
    try:
        opened = Image.open(io.BytesIO(data), formats=[SUPPORTED_FORMATS[fmt]])  # lazy: header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(exc, settings, source) from exc
    except (UnidentifiedImageError, *_DECODE_ERRORS) as exc:
        raise ImageDecodeError(
            f"{source!r} starts like a {fmt} image but its header is invalid ({exc}); the file is corrupt",
            source=source,
        ) from exc
    with opened as im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageDecodeError(
                f"{source!r} is a {fmt} image of size {width}x{height} (empty)", source=source
            )
        if width * height > settings.max_pixels:
            raise _pixel_error(width, height, settings, source)
        size = _fit_size((width, height), settings.max_side)
        try:
            if fmt == "JPEG" and size != im.size:
                im.draft("RGB", size)  # decode at 1/2, 1/4 or 1/8 scale, never below ``size``
            im.load()  # first frame only: Pillow opens animations on frame 0
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(exc, settings, source) from exc
        except _DECODE_ERRORS as exc:
            raise ImageDecodeError(
                f"{source!r} is a truncated or corrupt {fmt} image ({exc}); download or export it again",
                source=source,
            ) from exc
        orientation = _orientation(im)
        original_size = (height, width) if orientation in _SWAPS_SIDES else (width, height)
        method = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
        try:
            rgb = to_rgb(im) if im.size == size else _downscale_to_rgb(im, size)
        except _DECODE_ERRORS as exc:
            raise ImageDecodeError(
                f"{source!r}: cannot convert colour mode {im.mode} to RGB ({exc})", source=source
            ) from exc
        if rgb is im:  # ``im`` is closed below: the result must be an image of its own
            rgb, method = (im.copy() if method is None else im.transpose(method)), None
    # the full-size frame is released by now; rotate only the (smaller) result
    if method is not None:
        rgb = rgb.transpose(method)
    return LoadedImage(
        image=rgb,
        source=source,
        format=fmt,
        content_sha256=hashlib.sha256(data).hexdigest(),
        original_size=original_size,
    )
