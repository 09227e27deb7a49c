"""Box average precision at one IoU threshold (PASCAL VOC style, all-point interpolation).

Pure functions over plain data: boxes are ``(x1, y1, x2, y2)`` in pixels of the image they belong to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from clothes_search.evaluation.protocol import iou

Box = tuple[float, float, float, float]
CategoryMatch = Callable[[str, str], bool]


@dataclass(frozen=True)
class ScoredBox:
    """One detection: its box, confidence and category name."""

    box: Box
    score: float
    category: str


@dataclass(frozen=True)
class TruthBox:
    """One ground-truth garment."""

    box: Box
    category: str


def exact_match(detected: str, truth: str) -> bool:
    return detected == truth


def average_precision(true_positive: Sequence[bool], ground_truth_count: int) -> float:
    """AP of a ranked list: ``true_positive[i]`` says whether the i-th best-scored detection is correct.

    Precision is made monotonically non-increasing (the envelope), then integrated over every recall
    step (all-point interpolation, VOC 2010+). 0 when there is no ground truth.
    """
    if ground_truth_count <= 0:
        return 0.0
    recalls, precisions = [0.0], [0.0]
    hits = 0
    for rank, hit in enumerate(true_positive, start=1):
        hits += bool(hit)
        recalls.append(hits / ground_truth_count)
        precisions.append(hits / rank)
    recalls.append(1.0)
    precisions.append(0.0)
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = max(precisions[i], precisions[i + 1])
    return sum(
        (recalls[i] - recalls[i - 1]) * precisions[i]
        for i in range(1, len(recalls))
        if recalls[i] != recalls[i - 1]
    )


def ranked_hits(
    detections: Mapping[str, Sequence[ScoredBox]],
    truths: Mapping[str, Sequence[TruthBox]],
    category: str,
    *,
    matches: CategoryMatch = exact_match,
    iou_threshold: float = 0.5,
) -> list[bool]:
    """For ``category``: every detection that ``matches`` it, best score first, marked hit or miss.

    Greedy matching: in score order, a detection takes the not yet taken ground-truth garment of
    ``category`` in its image with the highest IoU, if that IoU is at least ``iou_threshold``; anything
    else (a duplicate, a poor box, an image without such a garment) is a false positive. Images are
    keyed by id in both mappings.
    """
    candidates = [
        (detection.score, image_id, detection.box)
        for image_id, image_detections in detections.items()
        for detection in image_detections
        if matches(detection.category, category)
    ]
    candidates.sort(key=lambda candidate: -candidate[0])  # stable: ties keep their input order
    taken: dict[str, set[int]] = {}
    hits = []
    for _, image_id, box in candidates:
        used = taken.setdefault(image_id, set())
        best, best_iou = None, iou_threshold
        for index, truth in enumerate(truths.get(image_id, ())):
            if truth.category != category or index in used:
                continue
            overlap = iou(box, truth.box)
            if overlap >= best_iou:
                best, best_iou = index, overlap
        if best is not None:
            used.add(best)
        hits.append(best is not None)
    return hits


def box_ap(
    detections: Mapping[str, Sequence[ScoredBox]],
    truths: Mapping[str, Sequence[TruthBox]],
    categories: Sequence[str],
    *,
    matches: CategoryMatch = exact_match,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Box AP per category at ``iou_threshold`` (categories without ground truth are left out)."""
    scores = {}
    for category in categories:
        count = sum(truth.category == category for image in truths.values() for truth in image)
        if count:
            hits = ranked_hits(detections, truths, category, matches=matches, iou_threshold=iou_threshold)
            scores[category] = average_precision(hits, count)
    return scores


def detection_recall(
    detections: Mapping[str, Sequence[ScoredBox]],
    truths: Mapping[str, Sequence[TruthBox]],
    *,
    matches: CategoryMatch = exact_match,
    iou_threshold: float = 0.5,
    min_score: float = 0.0,
) -> float:
    """The fraction of ground-truth garments that some detection scoring at least ``min_score`` finds.

    Found: the detection's category ``matches`` the garment's and their IoU is at least ``iou_threshold``.
    """
    found = total = 0
    for image_id, image_truths in truths.items():
        kept = [d for d in detections.get(image_id, ()) if d.score >= min_score]
        for truth in image_truths:
            total += 1
            found += any(
                matches(d.category, truth.category) and iou(d.box, truth.box) >= iou_threshold for d in kept
            )
    return found / total if total else 0.0
