"""Small JPEGs of catalog images, kept by ingestion so that answers can show pictures whatever the
original source was (a private bucket, a local file, a URL that later changes)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from ingestion.images.decode import LoadedImage


@dataclass(frozen=True)
class Thumbnail:
    """A JPEG at most ``size`` pixels on its longest side, and the original image's size."""

    jpeg: bytes
    width: int
    height: int
    original_size: tuple[int, int]
    content_hash: str  # of the original's encoded bytes


def make_thumbnail(loaded: LoadedImage, size: int, quality: int = 82) -> Thumbnail:
    """A thumbnail of a decoded image (from the already reduced decode: no second decode)."""
    image = loaded.image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
    return Thumbnail(
        buffer.getvalue(), image.width, image.height, loaded.original_size, loaded.content_sha256
    )
