"""Load images from bytes, local paths, ``file://`` and ``http(s)://`` URLs, safely.

>>> loaded = load_image("https://example.com/shirt.jpg", settings.fetch, allow_local_files=False)
>>> loaded.image.mode, loaded.format
('RGB', 'JPEG')

Every failure is a typed :class:`ingestion.errors.ImageError` with an actionable message:
``UnsafeURLError`` (scheme, local files, SSRF guard), ``ImageNotFoundError``,
``ImageFetchError`` / ``ImageFetchTimeoutError``, ``ImageTooLargeError`` and ``ImageDecodeError``.
"""

from __future__ import annotations

from clothes_search.settings import FetchSettings
from ingestion.images.decode import LoadedImage, decode_image, describe_content, sniff_format, to_rgb
from ingestion.images.fetch import FetchedBytes, address_class, fetch_url
from ingestion.images.sources import (
    ALLOWED_SCHEMES,
    ImageSource,
    ImageSourceLike,
    SourceKind,
    classify_source,
    read_local_file,
)

__all__ = [
    "ALLOWED_SCHEMES",
    "FetchedBytes",
    "ImageSource",
    "ImageSourceLike",
    "LoadedImage",
    "SourceKind",
    "address_class",
    "classify_source",
    "decode_image",
    "describe_content",
    "fetch_url",
    "load_image",
    "read_local_file",
    "sniff_format",
    "to_rgb",
]


def load_image(
    source: ImageSourceLike, settings: FetchSettings, *, allow_local_files: bool = True
) -> LoadedImage:
    """Load ``source`` (bytes, a local path, a file:// or http(s):// URL) as an upright RGB image.

    ``allow_local_files=False`` (for requests from the network) refuses paths and file:// URLs.
    """
    src = classify_source(source, allow_local_files=allow_local_files)
    if src.kind is SourceKind.BYTES:
        assert src.data is not None
        data = src.data
    elif src.kind is SourceKind.PATH:
        assert src.path is not None
        data = read_local_file(src.path, settings, label=src.label)
    else:
        assert src.url is not None
        data = fetch_url(src.url, settings).data
    return decode_image(data, settings, source=src.label)
