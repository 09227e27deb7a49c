"""Shared fixtures: settings built per test, real photos, the fetched MediaPipe models."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clothes_search.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def _require(path: Path, how: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: {how}", pytrace=False)
    return path


MODELS_DIR = Path(os.environ.get("CLOTHES_SEARCH_TEST_MODELS_DIR", REPO_ROOT / "models"))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The models directory the project's set-up fills, with the MediaPipe files in it."""
    _require(
        MODELS_DIR / "mediapipe", "run scripts/setup.sh (it runs `clothes-search models fetch-mediapipe`)"
    )
    return MODELS_DIR


@pytest.fixture(scope="session")
def messi_path() -> Path:
    """A full-body photo of a footballer (OpenCV sample data, installed by the test set-up)."""
    return _require(OPENCV_DATA / "messi5.jpg", "install Debian's opencv-doc (scripts/test.sh does)")


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    """An upper-body portrait (public domain, see tests/data/LICENSES.md)."""
    return _require(DATA_DIR / "astronaut.jpg", "tests/data/astronaut.jpg is part of the repository")


@pytest.fixture(scope="session")
def messi(messi_path: Path) -> Image.Image:
    return Image.open(messi_path).convert("RGB")


@pytest.fixture(scope="session")
def astronaut(astronaut_path: Path) -> Image.Image:
    return Image.open(astronaut_path).convert("RGB")


@pytest.fixture
def make_settings(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings from keyword overrides, isolated from the caller's CLOTHES_SEARCH_* environment."""
    for key in list(os.environ):
        if key.startswith("CLOTHES_SEARCH_") and not key.startswith("CLOTHES_SEARCH_TEST_"):
            monkeypatch.delenv(key)

    def build(**overrides: Any) -> Settings:
        overrides.setdefault("models_dir", MODELS_DIR)
        return Settings.load(**overrides)

    return build


@pytest.fixture(scope="session")
def opencv_photo() -> Callable[[str], Image.Image]:
    """Open one of OpenCV's sample photos (Debian opencv-doc) as RGB."""

    def open_photo(name: str) -> Image.Image:
        path = _require(OPENCV_DATA / name, "install Debian's opencv-doc (scripts/test.sh does)")
        return Image.open(path).convert("RGB")

    return open_photo
