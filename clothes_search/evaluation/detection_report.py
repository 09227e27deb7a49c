"""Markdown tables of detection scores, one column per detector."""

from __future__ import annotations

import math
from collections.abc import Sequence

from clothes_search.evaluation.detection import DetectionScores


def _cell(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def scores_table(columns: Sequence[tuple[str, DetectionScores]]) -> str:
    """AP@0.5 per category, mean AP (all, consumer, shop images) and recall@0.5; one column per detector."""
    categories = list(dict.fromkeys(c for _, scores in columns for c in scores.ap50))
    rows = [
        [f"AP@0.5 {category}", *(_cell(s.ap50.get(category)) for _, s in columns)] for category in categories
    ]
    rows.append(["**mAP@0.5**", *(f"**{_cell(s.map50)}**" for _, s in columns)])
    for source, label in (("user", "consumer photos"), ("shop", "shop photos")):
        rows.append([f"mAP@0.5 {label}", *(_cell(s.map50_by_source.get(source)) for _, s in columns)])
    rows.append(["recall@0.5", *(_cell(s.recall50) for _, s in columns)])
    for source, label in (("user", "consumer photos"), ("shop", "shop photos")):
        rows.append([f"recall@0.5 {label}", *(_cell(s.recall50_by_source.get(source)) for _, s in columns)])
    header = ["", *(name for name, _ in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
