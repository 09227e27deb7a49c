"""What an image source is (bytes, local path, ``file://`` or ``http(s)://`` URL) and reading local files.

A string is a URL when it starts with a scheme of two or more characters followed by ``:``
(``https:``, ``file:``, ``data:``...); anything else, including Windows drive paths such as
``C:\\img.jpg``, is a local path. So a relative file literally named ``foo:bar.jpg`` must be
passed as a :class:`pathlib.Path` (or ``./foo:bar.jpg``).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from clothes_search.settings import FetchSettings
from ingestion.errors import ImageError, ImageNotFoundError, ImageTooLargeError, UnsafeURLError

#: every URL scheme :func:`ingestion.images.load_image` accepts
ALLOWED_SCHEMES: tuple[str, ...] = ("http", "https", "file")
BYTES_LABEL = "<bytes>"

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")

ImageSourceLike = str | bytes | bytearray | memoryview | os.PathLike


class SourceKind(StrEnum):
    BYTES = "bytes"
    PATH = "path"
    URL = "url"


@dataclass(frozen=True)
class ImageSource:
    """A classified source. Exactly one of ``data``, ``path`` or ``url`` is set, per ``kind``."""

    kind: SourceKind
    label: str
    data: bytes | None = None
    path: Path | None = None
    url: str | None = None


def _refuse_local(label: str) -> UnsafeURLError:
    return UnsafeURLError(
        f"local files are not allowed here ({label!r}); send the image bytes or an http(s) URL instead",
        source=label,
    )


def classify_source(source: ImageSourceLike, *, allow_local_files: bool = True) -> ImageSource:
    """Tell bytes, local paths and URLs apart; refuse unknown schemes and, if asked, local files."""
    if isinstance(source, bytes | bytearray | memoryview):
        return ImageSource(SourceKind.BYTES, BYTES_LABEL, data=bytes(source))
    if isinstance(source, os.PathLike):
        label = os.fspath(source)
        if isinstance(label, bytes):
            label = os.fsdecode(label)
        if not allow_local_files:
            raise _refuse_local(label)
        return ImageSource(SourceKind.PATH, label, path=Path(label))
    if not isinstance(source, str):
        raise TypeError(f"image source must be bytes, a path or a URL string, not {type(source).__name__}")

    label = source
    text = source.strip()
    if not text:
        raise ImageNotFoundError("empty image source: give a path, a URL or the image bytes", source=label)
    match = _SCHEME_RE.match(text)
    if match is None:
        if not allow_local_files:
            raise _refuse_local(label)
        return ImageSource(SourceKind.PATH, label, path=Path(source))

    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        return ImageSource(SourceKind.URL, label, url=text)
    if scheme == "file":
        if not allow_local_files:
            raise _refuse_local(label)
        return ImageSource(SourceKind.PATH, label, path=file_url_to_path(text))
    raise UnsafeURLError(
        f"unsupported URL scheme {scheme!r} in {_short(text)!r}; allowed schemes: "
        f"{', '.join(s + '://' for s in ALLOWED_SCHEMES)} (or a plain local path, or the image bytes)",
        source=label,
    )


def check_inside_roots(path: Path, roots: Sequence[Path], *, label: str) -> None:
    """Raise UnsafeURLError unless ``path`` (links resolved) is inside one of ``roots`` (none: any)."""
    if not roots:
        return
    real = Path(os.path.realpath(path))
    if any(real.is_relative_to(os.path.realpath(root)) for root in roots):
        return
    raise UnsafeURLError(
        f"local image {label!r} is outside the folders images may be read from (fetch.local_roots)",
        source=label,
    )


def file_url_to_path(url: str) -> Path:
    """``file:///tmp/a%20b.jpg`` -> ``Path('/tmp/a b.jpg')``. Only local (empty or localhost) hosts."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UnsafeURLError(
            f"file:// URL with a remote host {parts.netloc!r} is not supported: {url!r}; "
            "use file:///absolute/path",
            source=url,
        )
    if not parts.path:
        raise ImageNotFoundError(f"file:// URL without a path: {url!r}", source=url)
    return Path(url2pathname(parts.path))


def read_local_file(path: Path, settings: FetchSettings, *, label: str | None = None) -> bytes:
    """Read a regular file of at most ``settings.max_bytes`` bytes."""
    label = label or str(path)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ImageNotFoundError(f"image file not found: {str(path)!r}", source=label) from None
    except PermissionError:
        raise ImageError(f"permission denied reading image file {str(path)!r}", source=label) from None
    except OSError as exc:  # name too long, loops of symlinks...
        raise ImageNotFoundError(
            f"cannot access image file {str(path)!r}: {exc.strerror}", source=label
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageNotFoundError(f"{str(path)!r} is a directory, not an image file", source=label)
    if not stat.S_ISREG(info.st_mode):
        raise ImageNotFoundError(
            f"{str(path)!r} is not a regular file (device, socket or pipe); give an image file", source=label
        )
    if info.st_size > settings.max_bytes:
        raise ImageTooLargeError(_too_many_bytes(str(path), info.st_size, settings.max_bytes), source=label)
    try:
        with path.open("rb") as handle:
            data = handle.read(settings.max_bytes + 1)
    except FileNotFoundError:
        raise ImageNotFoundError(f"image file not found: {str(path)!r}", source=label) from None
    except OSError as exc:
        raise ImageError(
            f"cannot read image file {str(path)!r}: {exc.strerror or exc}", source=label
        ) from None
    if len(data) > settings.max_bytes:  # the file grew after stat()
        raise ImageTooLargeError(_too_many_bytes(str(path), None, settings.max_bytes), source=label)
    return data


def _too_many_bytes(what: str, size: int | None, limit: int) -> str:
    size_text = f"{size:,} bytes" if size is not None else "larger than the limit"
    return (
        f"image {what!r} is {size_text}, above the limit of {limit:,} bytes (fetch.max_bytes); "
        "shrink the image or raise fetch.max_bytes"
    )


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
