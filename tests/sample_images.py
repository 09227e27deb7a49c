"""Small images drawn for tests."""

from __future__ import annotations

from PIL import Image, ImageDraw


def product_shot(
    colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (300, 400)
) -> Image.Image:
    """A catalog-style image: one T-shirt shape on a white background, no person."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    outline = [
        (0.3, 0.15), (0.7, 0.15), (0.95, 0.35), (0.8, 0.45), (0.75, 0.4),
        (0.75, 0.9), (0.25, 0.9), (0.25, 0.4), (0.2, 0.45), (0.05, 0.35),
    ]  # fmt: skip
    draw.polygon([(w * x, h * y) for x, y in outline], fill=colour)
    return image
