"""Turn untrusted bytes into an RGB :class:`PIL.Image.Image`, safely.

The format is sniffed from magic bytes (a Content-Type header or file extension is never
trusted) and Pillow is restricted to that one format. The pixel count is checked from the
header before any pixel is decoded; Pillow's own global decompression-bomb limit is neither
relied on nor changed, only caught as a backstop. The image is then fully decoded, rotated
upright from its EXIF orientation, reduced to its first frame, and converted to RGB with any
transparency composited on white.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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

    ``original_size`` is the full-resolution (width, height) at load time, after EXIF orientation,
    i.e. equal to ``image.size`` until someone downscales ``image`` (keep it to map boxes back).
    """

    image: Image.Image  #: mode RGB, upright
    source: str  #: the path or URL as given, or "<bytes>"
    format: str  #: JPEG, PNG, GIF, WEBP, BMP or TIFF (sniffed from the bytes)
    content_sha256: str  #: of the raw encoded bytes
    original_size: tuple[int, int]


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


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit grey, scaled rather than clipped."""
    arr = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16"):
        scale = 255.0 / 65535.0
    else:
        peak = float(arr.max()) if arr.size else 0.0
        if im.mode == "F":
            scale = 255.0 if peak <= 1.0 else 1.0
        else:
            scale = 1.0 if peak <= 255 else (255.0 / 65535.0 if peak <= 65535 else 255.0 / peak)
    return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8))


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency (alpha or palette/colour key) is composited on white."""
    if im.mode in _HIGH_DEPTH_MODES:
        im = _high_depth_to_l(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if im.mode == "RGB":
        return im
    return im.convert("RGB")


def decode_image(data: bytes, settings: FetchSettings, source: str = BYTES_LABEL) -> LoadedImage:
    """Decode untrusted image bytes into an upright RGB :class:`LoadedImage`."""
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
        try:
            im.load()  # first frame only: Pillow opens animations on frame 0
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(exc, settings, source) from exc
        except _DECODE_ERRORS as exc:
            raise ImageDecodeError(
                f"{source!r} is a truncated or corrupt {fmt} image ({exc}); download or export it again",
                source=source,
            ) from exc
        try:
            upright = ImageOps.exif_transpose(im)
        except _DECODE_ERRORS:  # a broken EXIF block must not lose an otherwise good image
            upright = im.copy()
        try:
            rgb = to_rgb(upright)
        except _DECODE_ERRORS as exc:
            raise ImageDecodeError(
                f"{source!r}: cannot convert colour mode {upright.mode} to RGB ({exc})", source=source
            ) from exc
    return LoadedImage(
        image=rgb,
        source=source,
        format=fmt,
        content_sha256=hashlib.sha256(data).hexdigest(),
        original_size=rgb.size,
    )
