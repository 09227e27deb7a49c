"""The shared category vocabulary: detector labels -> our names -> coarse groups."""

from __future__ import annotations

from clothes_search.settings import CategorySettings
from ingestion.errors import ModelConfigError


class CategoryVocabulary:
    """Maps detector labels onto the configured vocabulary.

    ``canonical("Long sleeve top") == "long_sleeve_top"``; ``group("trousers") == "bottom"``.
    WBF fuses boxes within one group, so a fine-grained detector's ``trousers`` and a
    heuristic detector's ``bottom`` can agree.
    """

    def __init__(self, settings: CategorySettings) -> None:
        self.names: tuple[str, ...] = tuple(settings.vocabulary)
        self._known = set(self.names)
        self._aliases = {self._key(k): v for k, v in settings.aliases.items()}
        self._coarse = dict(settings.coarse)

    @staticmethod
    def _key(label: str) -> str:
        return label.strip().lower().replace("-", "_").replace(" ", "_")

    def canonical(self, label: str) -> str:
        key = self._key(label)
        name = key if key in self._known else self._aliases.get(key)
        if name is None:
            raise ModelConfigError(
                f"category {label!r} is not in the vocabulary; add it to categories.vocabulary "
                f"or map it in categories.aliases (known: {', '.join(self.names)})"
            )
        return name

    def group(self, category: str) -> str:
        """The coarse group a category is fused in (itself when it has none)."""
        return self._coarse.get(category, category)

    def specificity(self, category: str) -> int:
        """1 for a fine category that has a coarse group, else 0 (used to name fused boxes)."""
        return 1 if category in self._coarse else 0
