"""Catalog feed rows for the shop images, in the shape :class:`ingestion.feed.CatalogRow` accepts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clothes_search.sample_data.categories import GarmentClass
from clothes_search.sample_data.garments import GarmentLook

BRANDS: tuple[str, ...] = ("Northwind", "Kestrel", "Atelier Nord", "Marlowe", "Oakridge", "Lumen & Co")
CURRENCY = "EUR"

#: Whole-euro price range per Fashion-MNIST label; prices end in .99.
_PRICE_RANGE: dict[int, tuple[int, int]] = {
    0: (12, 35),
    1: (29, 89),
    2: (25, 79),
    3: (29, 119),
    4: (59, 249),
    6: (19, 69),
}


@dataclass(frozen=True)
class Listing:
    """The shop's facts about an item: brand, price in cents, stock."""

    brand: str
    price_cents: int
    in_stock: bool

    @property
    def price(self) -> float:
        """The price in euros; ``cents / 100`` is the float whose shortest repr has 2 decimals."""
        return self.price_cents / 100


def draw_listing(rng: np.random.Generator, garment: GarmentClass) -> Listing:
    """A brand, a price in the class's range and a stock flag (85 % in stock)."""
    low, high = _PRICE_RANGE[garment.label]
    return Listing(
        brand=BRANDS[int(rng.integers(len(BRANDS)))],
        price_cents=int(rng.integers(low, high + 1)) * 100 - 1,
        in_stock=bool(rng.uniform() < 0.85),
    )


def product_title(look: GarmentLook, garment: GarmentClass) -> str:
    """``"Red striped pullover"``, ``"Navy trousers"``."""
    words = [look.colour.name.capitalize(), look.pattern.adjective, garment.noun]
    return " ".join(word for word in words if word)


def catalog_row(
    sku: str,
    image_path: Path,
    garment: GarmentClass,
    look: GarmentLook,
    listing: Listing,
    attributes: dict[str, str | int],
) -> dict[str, object]:
    """One feed row for a shop image; ``attributes`` carries the pattern and the ground truth."""
    return {
        "sku": sku,
        "image_path": str(image_path),
        "title": product_title(look, garment),
        "category": garment.category,
        "brand": listing.brand,
        "price": listing.price,
        "currency": CURRENCY,
        "color": look.colour.name,
        "in_stock": listing.in_stock,
        "attributes": {"pattern": look.pattern.value, **attributes},
    }
