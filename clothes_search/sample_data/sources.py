"""The input files of the sample set: Fashion-MNIST and background photos from Debian packages.

Neither is copied into the repository; both are read when the set is generated. They are
installed by ``scripts/system-deps.sh`` (Debian packages ``dataset-fashion-mnist`` and ``opencv-doc``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clothes_search.sample_data.errors import MissingSourceError

FashionMnistPart = Literal["train", "t10k"]

INSTALL_HINT = (
    "run scripts/system-deps.sh (it installs the Debian packages dataset-fashion-mnist and opencv-doc)"
)

#: Where the licence notes below come from.
OPENCV_COPYRIGHT_FILE = Path("/usr/share/doc/opencv-doc/copyright")

_OPENCV_LICENCE = "Apache-2.0 AND BSD-3-Clause (the `Files: *` stanza); photographer not recorded"


@dataclass(frozen=True)
class BackgroundPhoto:
    """A real photo that consumer images are cut from, with what is known of its licence."""

    file_name: str
    description: str
    licence: str = _OPENCV_LICENCE


#: Scenes without a known third-party origin. Left out on purpose: lena (removed by Debian for its
#: licence), messi5 (a press photo), baboon (USC-SIPI), graf* (Oxford VGG), aloe*/rubberwhale*
#: (Middlebury research data sets), starry_night (a museum reproduction).
BACKGROUND_PHOTOS: tuple[BackgroundPhoto, ...] = (
    BackgroundPhoto("building.jpg", "a hotel building behind a lawn"),
    BackgroundPhoto("home.jpg", "a palace facade under a blue sky"),
    BackgroundPhoto("leuvenA.jpg", "a cobbled street between brick houses"),
    BackgroundPhoto("leuvenB.jpg", "the same street from another angle"),
    BackgroundPhoto("stuff.jpg", "a grey table top with small objects"),
    BackgroundPhoto("left.jpg", "books on a shelf in a room"),
    BackgroundPhoto("fruits.jpg", "a close-up of cut fruit"),
    BackgroundPhoto("board.jpg", "a circuit board (a busy texture)"),
    BackgroundPhoto("squirrel_cls.jpg", "a squirrel on a branch among leaves"),
    BackgroundPhoto("aero3.jpg", "an aerial view of a town"),
)


@dataclass(frozen=True)
class SampleSources:
    """Folders holding the input files; the defaults are where the Debian packages install them."""

    fashion_mnist_dir: Path = Path("/usr/share/datasets/fashion-mnist")
    backgrounds_dir: Path = Path("/usr/share/doc/opencv-doc/examples/data")

    def fashion_mnist_files(self, part: FashionMnistPart) -> tuple[Path, Path]:
        """The ``(images, labels)`` IDX files of one part of Fashion-MNIST."""
        return (
            self.fashion_mnist_dir / f"{part}-images-idx3-ubyte.gz",
            self.fashion_mnist_dir / f"{part}-labels-idx1-ubyte.gz",
        )

    def background_files(self) -> tuple[Path, ...]:
        """The background photos, in :data:`BACKGROUND_PHOTOS` order."""
        return tuple(self.backgrounds_dir / photo.file_name for photo in BACKGROUND_PHOTOS)

    def all_files(self) -> tuple[Path, ...]:
        """Every input file, in a fixed order."""
        return (
            *self.fashion_mnist_files("train"),
            *self.fashion_mnist_files("t10k"),
            *self.background_files(),
        )

    def check(self) -> None:
        """Raise :class:`MissingSourceError` naming every missing input file and how to install them."""
        missing = [str(path) for path in self.all_files() if not path.is_file()]
        if missing:
            raise MissingSourceError(f"missing input files: {', '.join(missing)}; {INSTALL_HINT}")


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
