"""A reader for Fashion-MNIST's gzipped IDX files (numpy + gzip, no other dependency).

IDX layout: two zero bytes, a type code (``0x08`` = unsigned byte), the number of dimensions, one
big-endian ``uint32`` size per dimension, then the data in C order.
"""

from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clothes_search.sample_data.errors import SampleDataError

_UNSIGNED_BYTE = 0x08
IMAGE_SIZE = 28


def read_idx(path: Path) -> np.ndarray:
    """The array in a gzipped IDX file of unsigned bytes; raises :class:`SampleDataError` if malformed."""
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise SampleDataError(f"{path}: cannot read the gzipped IDX file: {exc}") from exc
    if len(data) < 4 or data[0:2] != b"\0\0" or data[2] != _UNSIGNED_BYTE:
        raise SampleDataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise SampleDataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise SampleDataError(f"{path}: {len(data)} bytes, the IDX header promises {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


@dataclass(frozen=True)
class FashionMnist:
    """One part of Fashion-MNIST: ``images`` (N, 28, 28) uint8, white garment on black; ``labels`` (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@functools.lru_cache(maxsize=2)
def load_fashion_mnist(images_path: Path, labels_path: Path) -> FashionMnist:
    """Read an images file and its labels file; the arrays are read-only and cached per path pair."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise SampleDataError(f"{images_path}: expected N x 28 x 28 images, got shape {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise SampleDataError(
            f"{labels_path}: expected {images.shape[0]} labels, one per image, got shape {labels.shape}"
        )
    if labels.size and labels.max() > 9:
        raise SampleDataError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    return FashionMnist(images=images, labels=labels)
