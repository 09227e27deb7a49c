"""The detector contract: boxes in xyxy pixel coordinates, a score and a category.

Coordinates: ``x1, y1`` is the top-left corner and ``x2, y2`` the bottom-right one, in
pixels of the image the detector was given, with ``0 <= x1 < x2 <= width``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box, xyxy in pixels."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.x1, self.y1, self.x2, self.y2))

    def clipped(self, width: int, height: int) -> Box:
        """The part of the box inside a ``width`` x ``height`` image (possibly empty)."""
        return Box(
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
            min(max(self.x2, 0.0), width),
            min(max(self.y2, 0.0), height),
        )

    def scaled(self, factor: float) -> Box:
        """The box with every coordinate multiplied by ``factor`` (between a reduced decode and the
        original's pixels)."""
        return Box(self.x1 * factor, self.y1 * factor, self.x2 * factor, self.y2 * factor)

    def padded(self, fraction: float, width: int, height: int) -> Box:
        """Grow each side by ``fraction`` of the box's size, then clip to the image."""
        dx, dy = self.width * fraction, self.height * fraction
        return Box(self.x1 - dx, self.y1 - dy, self.x2 + dx, self.y2 + dy).clipped(width, height)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_list(self, ndigits: int = 1) -> list[float]:
        return [round(v, ndigits) for v in (self.x1, self.y1, self.x2, self.y2)]


@dataclass(frozen=True, slots=True)
class Detection:
    """One garment found by one detector."""

    box: Box
    score: float
    category: str
    detector: str


@dataclass(frozen=True, slots=True)
class FusedDetection:
    """A garment after Weighted Boxes Fusion across the m detectors.

    ``detectors`` names the detectors that contributed a box to this cluster;
    ``is_fallback`` is true for the whole-image box used when nothing was found;
    ``alternatives`` holds the other class hypotheses for the same garment as
    ``(category, score)``, highest score first (see ``fusion.same_garment_iou``).
    """

    box: Box
    score: float
    category: str
    detectors: tuple[str, ...]
    is_fallback: bool = False
    alternatives: tuple[tuple[str, float], ...] = ()


class Detector(ABC):
    """Finds garments in a batch of RGB images.

    Subclasses load their weights in :meth:`load` (called once per process, lazily)
    and never at construction or import time.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights; called once before the first :meth:`detect`."""

    @abstractmethod
    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """One list of detections per image, boxes in that image's pixels."""

    def weights_present(self) -> bool:
        """Whether everything :meth:`load` needs is on this machine."""
        return True

    @property
    def runtime(self) -> str:
        """What runs the model ('torch', 'onnxruntime', 'litert', 'none'), for reports."""
        return "torch"

    def describe(self) -> dict[str, object]:
        """A JSON-friendly description for ``clothes-search models``."""
        return {"name": self.name, "kind": type(self).__name__}
