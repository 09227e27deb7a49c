"""The whole image as one garment box: the right detector for catalog product shots."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from ingestion.detection import Box, Detection, Detector


class WholeImageDetector(Detector):
    """Returns one box covering the image, with a fixed score and category."""

    def __init__(self, name: str, *, category: str = "garment", score: float = 1.0) -> None:
        super().__init__(name)
        self.category = category
        self.score = score

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        return [
            [
                Detection(
                    Box(0.0, 0.0, float(img.width), float(img.height)), self.score, self.category, self.name
                )
            ]
            for img in images
        ]

    @property
    def runtime(self) -> str:
        return "none"

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "category": self.category}
