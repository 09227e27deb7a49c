"""What the trainers share: the splits of a DeepFashion2-format data set and their content hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from clothes_search.evaluation.deepfashion2 import ImageAnnotation, read_split


def split_dir(data: Path, split: str) -> Path:
    """``data/split``, or ``data`` itself when it is already a split (has ``annos/``)."""
    if (data / "annos").is_dir():
        return data
    path = data / split
    if not (path / "annos").is_dir():
        raise FileNotFoundError(f"{path} is not a DeepFashion2-format split (no annos/ folder)")
    return path


def read_training_split(data: Path, split: str) -> list[ImageAnnotation]:
    return read_split(split_dir(data, split))


def data_hash(*splits: Path) -> str:
    """SHA-256 over every annotation and image file (name and bytes) of the given split folders.

    Recorded in checkpoints, so a model says exactly which data it was trained on.
    """
    digest = hashlib.sha256()
    for root in splits:
        for folder in ("annos", "image"):
            for path in sorted((root / folder).iterdir()):
                if path.is_file():
                    digest.update(f"{root.name}/{folder}/{path.name}\0".encode())
                    digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
