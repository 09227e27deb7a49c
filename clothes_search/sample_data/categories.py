"""The Fashion-MNIST garment classes the sample set uses, mapped onto DeepFashion2 categories."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GarmentClass:
    """One Fashion-MNIST class and the DeepFashion2 category it stands for.

    ``noun`` names the product in catalog titles ("Red striped pullover"); ``category_name`` is spelled
    as DeepFashion2 spells it and ``category`` is our vocabulary's snake_case form of it. ``seal_seams``
    says whether 1–2 px dark gaps in the 28x28 image are seams to close (not for trousers' leg gap).
    """

    label: int
    fashion_mnist_name: str
    noun: str
    category_id: int
    category_name: str
    seal_seams: bool = True

    @property
    def category(self) -> str:
        """Our vocabulary's name for the DeepFashion2 category: ``"long sleeve top" -> "long_sleeve_top"``."""
        return self.category_name.replace(" ", "_")


#: The six garment classes of Fashion-MNIST, by label; sandals, sneakers, bags and boots are not used.
GARMENT_CLASSES: tuple[GarmentClass, ...] = (
    GarmentClass(0, "T-shirt/top", "t-shirt", 1, "short sleeve top"),
    GarmentClass(1, "Trouser", "trousers", 8, "trousers", seal_seams=False),
    GarmentClass(2, "Pullover", "pullover", 2, "long sleeve top"),
    GarmentClass(3, "Dress", "dress", 10, "short sleeve dress"),
    GarmentClass(4, "Coat", "coat", 4, "long sleeve outwear"),
    GarmentClass(6, "Shirt", "shirt", 2, "long sleeve top"),
)

GARMENT_CLASS_BY_LABEL: dict[int, GarmentClass] = {garment.label: garment for garment in GARMENT_CLASSES}
