"""Small images drawn for tests."""

from __future__ import annotations

import io

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


def garment(
    colour: tuple[int, int, int], pattern: str, motif: str = "none", size: tuple[int, int] = (240, 300)
) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    outline = [
        (0.3, 0.1),
        (0.7, 0.1),
        (0.95, 0.35),
        (0.75, 0.4),
        (0.75, 0.9),
        (0.25, 0.9),
        (0.25, 0.4),
        (0.05, 0.35),
    ]
    draw.polygon([(w * x, h * y) for x, y in outline], fill=colour)
    if pattern == "stripes":
        for y in range(int(h * 0.15), int(h * 0.9), 18):
            draw.rectangle([w * 0.25, y, w * 0.75, y + 6], fill="white")
    x1, x2, y1, y2 = int(w * 0.3), int(w * 0.7), int(h * 0.2), int(h * 0.85)
    if motif == "dots":
        for x in range(x1, x2, 22):
            for y in range(y1, y2, 22):
                draw.ellipse([x, y, x + 9, y + 9], fill="black")
    elif motif == "checks":
        for x in range(x1, x2, 24):
            for y in range(y1 + (x // 24 % 2) * 12, y2, 24):
                draw.rectangle([x, y, x + 11, y + 11], fill=(250, 250, 250))
    elif motif == "diagonal":
        for k in range(-300, 300, 20):
            draw.line([(x1 + k, y1), (x1 + k + 150, y2)], fill="black", width=4)
    elif motif == "vertical":
        for x in range(x1, x2, 16):
            draw.rectangle([x, y1, x + 5, y2], fill="black")
    elif motif == "cross":
        draw.line([(x1, y1), (x2, y2)], fill="black", width=12)
        draw.line([(x2, y1), (x1, y2)], fill="black", width=12)
    return image


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def street_photo(product: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The product, smaller, pasted on a busy background: the query photo and the garment's box."""
    background = Image.new("RGB", (520, 420), (90, 110, 90))
    draw = ImageDraw.Draw(background)
    for x in range(0, 520, 40):
        draw.line([(x, 0), (x + 120, 420)], fill=(60, 70, 60), width=8)
    small = product.resize((200, 250))
    background.paste(small, (150, 90))
    return background, (150, 90, 350, 340)
