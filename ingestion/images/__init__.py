"""Load images from bytes, local paths, ``file://`` and ``http(s)://`` URLs, safely.

>>> loaded = load_image("https://example.com/shirt.jpg", settings.fetch, allow_local_files=False)
>>> loaded.image.mode, loaded.format
('RGB', 'JPEG')

Every failure is a typed :class:`ingestion.errors.ImageError` with an actionable message:
``UnsafeURLError`` (scheme, local files, SSRF guard), ``ImageNotFoundError``,
``ImageFetchError`` / ``ImageFetchTimeoutError``, ``ImageTooLargeError`` and ``ImageDecodeError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clothes_search.settings import FetchSettings
from ingestion.images.decode import LoadedImage, decode_image, describe_content, sniff_format, to_rgb
from ingestion.images.fetch import FetchedBytes, address_class, fetch_url
from ingestion.images.sources import (
    ALLOWED_SCHEMES,
    ImageSource,
    ImageSourceLike,
    SourceKind,
    check_inside_roots,
    classify_source,
    read_local_file,
)

__all__ = [
    "ALLOWED_SCHEMES",
    "FetchedBytes",
    "ImageSource",
    "ImageSourceLike",
    "LoadedImage",
    "SourceBytes",
    "SourceKind",
    "address_class",
    "check_inside_roots",
    "classify_source",
    "decode_image",
    "describe_content",
    "fetch_url",
    "load_image",
    "read_local_file",
    "read_source",
    "sniff_format",
    "to_rgb",
]


def load_image(
    source: ImageSourceLike,
    settings: FetchSettings,
    *,
    allow_local_files: bool | None = None,
    local_roots: Sequence[Path] = (),
) -> LoadedImage:
    """Load ``source`` (bytes, a local path, a file:// or http(s):// URL) as an upright RGB image.

    Local paths and file:// URLs are read only when ``allow_local_files`` (default:
    ``settings.local_files``) and, when ``settings.local_roots`` or ``local_roots`` name folders, only
    inside one of them (after resolving links). URLs follow ``settings`` (ports, SSRF guard, limits).
    """
    raw = read_source(source, settings, allow_local_files=allow_local_files, local_roots=local_roots)
    return decode_image(raw.data, settings, source=raw.label)


@dataclass(frozen=True)
class SourceBytes:
    data: bytes
    label: str


def read_source(
    source: ImageSourceLike,
    settings: FetchSettings,
    *,
    allow_local_files: bool | None = None,
    local_roots: Sequence[Path] = (),
) -> SourceBytes:
    """The encoded bytes of ``source`` under the rules of :func:`load_image`, not decoded yet (so that
    many can be fetched at once and decoded one at a time)."""
    allowed = settings.local_files if allow_local_files is None else allow_local_files
    src = classify_source(source, allow_local_files=allowed)
    if src.kind is SourceKind.BYTES:
        assert src.data is not None
        return SourceBytes(src.data, src.label)
    if src.kind is SourceKind.PATH:
        assert src.path is not None
        check_inside_roots(src.path, [*settings.local_roots, *local_roots], label=src.label)
        return SourceBytes(read_local_file(src.path, settings, label=src.label), src.label)
    assert src.url is not None
    return SourceBytes(fetch_url(src.url, settings).data, src.label)
