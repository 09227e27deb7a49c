"""The DeepFashion2 consumer-to-shop clothes-retrieval protocol, as pure functions.

A *query item* is a garment of a consumer photo (``source == "user"``) with ``style > 0``; every one of
them is in the denominator, so a garment the detector misses counts as a failure.

1. **Assignment.** Each detection of a query image goes to the ground-truth garment of the same category
   (per the :data:`CategoryMatch`) with the largest IoU among *all* that image's garments, style 0
   included (IoU must be > 0; ties go to the lower item index). A detection assigned to a style-0 garment
   is ignored. When several detections land on one garment the highest-scoring one stands (ties: the
   earlier detection) and only its ranked results are scored.
2. **Correctness.** A returned gallery crop is correct when its gallery image has the query image's
   ``pair_id`` and its box has IoU ≥ ``gallery_iou`` with a garment of that image with the query item's
   style.
3. **Scores.** top-k accuracy is the fraction of query items with a correct crop among the first ``k``
   results. AP@20 is ``(1 / min(R, 20)) · Σ_{i ≤ 20} P@i · rel_i`` where ``R`` is the number of gallery
   garments with the query's ``pair_id`` and style; a gallery garment is found once (a second crop of an
   already-found garment is not relevant). Items with ``R = 0`` or no detection have AP 0; mAP@20 is the
   mean over all query items. ``detection_recall_at_50`` reports the detector on its own: the fraction of
   query items with *some* detection of a matching category at IoU ≥ 0.5.

Boxes are ``(x1, y1, x2, y2)`` in pixels of their own image, ``x1 <= x2`` and ``y1 <= y2``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from clothes_search.errors import ClothesSearchError
from clothes_search.evaluation.deepfashion2 import GarmentAnnotation, ImageAnnotation

__all__ = [
    "AGNOSTIC_CATEGORY",
    "MAP_DEPTH",
    "Box",
    "CategoryMatch",
    "EvaluationInputError",
    "ItemOutcome",
    "QueryDetection",
    "RetrievalScores",
    "RetrievedCrop",
    "default_category_match",
    "evaluate",
    "iou",
]

Box = tuple[float, float, float, float]

#: the category that category-agnostic detectors (e.g. whole-image) emit; it matches every garment
AGNOSTIC_CATEGORY = "garment"
#: the cut-off of mAP@20
MAP_DEPTH = 20
#: the IoU a detection needs with a garment to count in ``detection_recall_at_50``
DETECTION_RECALL_IOU = 0.5


class EvaluationInputError(ClothesSearchError):
    """The retrieval results handed to :func:`evaluate` do not fit the annotations."""

    kind = "evaluation_input"


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes; 0.0 when the union is empty."""
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    intersection = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


@dataclass(frozen=True)
class RetrievedCrop:
    """One returned gallery crop: its image and its box in that image's pixels."""

    gallery_image_id: str
    box: Box


@dataclass(frozen=True)
class QueryDetection:
    """One garment detected in a query image and the gallery crops retrieved for it, best first."""

    box: Box
    category: str
    score: float
    results: tuple[RetrievedCrop, ...]


#: ``(detected category, ground-truth category key) -> same category?``
CategoryMatch = Callable[[str, str], bool]


def default_category_match(coarse_groups: Mapping[str, str]) -> CategoryMatch:
    """The usual category rule for our vocabulary.

    A detection matches a ground-truth garment when the names are equal (``trousers``/``trousers``), when
    the detection is the garment's coarse group (``bottom`` for ``trousers``, with ``coarse_groups``
    mapping fine names to groups as ``categories.coarse`` does), or when the detection is
    :data:`AGNOSTIC_CATEGORY` (``garment``), which category-agnostic detectors such as whole-image emit:
    such a detection can be assigned to any garment, by IoU alone.
    """
    groups = dict(coarse_groups)

    def matches(detected: str, truth: str) -> bool:
        return detected in (truth, AGNOSTIC_CATEGORY) or groups.get(truth) == detected

    return matches


@dataclass
class ItemOutcome:
    """How one query item fared; ``first_correct_rank`` is 1-based, None when nothing correct came back."""

    image_id: str
    item_key: str
    pair_id: int
    style: int
    category: str
    detected: bool
    detection_iou: float | None
    first_correct_rank: int | None
    average_precision: float


@dataclass
class RetrievalScores:
    """The protocol's scores over all query items, and each item's outcome."""

    ks: tuple[int, ...]
    query_items: int
    detected_items: int
    topk_accuracy: dict[int, float]
    map_at_20: float
    detection_recall_at_50: float
    items: list[ItemOutcome]


def _assign_detections(
    image: ImageAnnotation, detections: Sequence[QueryDetection], category_match: CategoryMatch
) -> dict[int, tuple[QueryDetection, float]]:
    """Item index -> (the detection that stands for it, its IoU), over all the image's items."""
    standing: dict[int, tuple[QueryDetection, float]] = {}
    for detection in detections:
        best_index, best_iou = None, 0.0
        for index, item in enumerate(image.items):
            if not category_match(detection.category, item.category):
                continue
            overlap = iou(detection.box, item.box)
            if overlap > best_iou:  # strict: ties keep the lower item index
                best_index, best_iou = index, overlap
        if best_index is None:
            continue
        current = standing.get(best_index)
        if current is None or detection.score > current[0].score:  # strict: ties keep the earlier one
            standing[best_index] = (detection, best_iou)
    return standing


def _matched_garments(
    crop: RetrievedCrop,
    pair_id: int,
    style: int,
    gallery: Mapping[str, ImageAnnotation],
    gallery_iou: float,
) -> list[tuple[float, GarmentAnnotation]]:
    """The gallery garments ``crop`` correctly retrieves, with their IoU, best first."""
    image = gallery.get(crop.gallery_image_id)
    if image is None:
        raise EvaluationInputError(
            f"a retrieved crop refers to gallery image {crop.gallery_image_id!r}, which is not in the gallery"
        )
    if image.pair_id != pair_id:
        return []
    matched = []
    for item in image.items:
        if item.style == style:
            overlap = iou(crop.box, item.box)
            if overlap >= gallery_iou:
                matched.append((overlap, item))
    matched.sort(key=lambda match: -match[0])
    return matched


def score_ranking(
    results: Sequence[RetrievedCrop],
    pair_id: int,
    style: int,
    gallery: Mapping[str, ImageAnnotation],
    gallery_iou: float,
    relevant_total: int,
) -> tuple[int | None, float]:
    """(1-based rank of the first correct crop or None, AP@20) of one ranked result list."""
    first_correct_rank = None
    found: set[tuple[str, str]] = set()
    hits, precision_sum = 0, 0.0
    for rank, crop in enumerate(results, start=1):
        matched = _matched_garments(crop, pair_id, style, gallery, gallery_iou)
        if matched and first_correct_rank is None:
            first_correct_rank = rank
        if rank > MAP_DEPTH:
            continue
        new = [item for _, item in matched if (crop.gallery_image_id, item.key) not in found]
        if new:
            found.add((crop.gallery_image_id, new[0].key))
            hits += 1
            precision_sum += hits / rank
    average_precision = precision_sum / min(relevant_total, MAP_DEPTH) if relevant_total else 0.0
    return first_correct_rank, average_precision


def validated_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise EvaluationInputError(f"ks must be a non-empty list of integers >= 1, got {list(ks)}")
    return tuple(sorted(set(ks)))


def gallery_garment_counts(gallery: Mapping[str, ImageAnnotation]) -> Counter[tuple[int, int]]:
    """How many gallery garments each ``(pair_id, style)`` with ``style > 0`` has (R of mAP@20)."""
    return Counter(
        (image.pair_id, item.style) for image in gallery.values() for item in image.items if item.style > 0
    )


def item_outcome(
    image: ImageAnnotation,
    item: GarmentAnnotation,
    detection: QueryDetection | None,
    gallery: Mapping[str, ImageAnnotation],
    gallery_iou: float,
    gallery_garments: Counter[tuple[int, int]],
) -> ItemOutcome:
    """The outcome of one query garment represented by ``detection`` (None: missed)."""
    first_correct_rank, average_precision, detection_iou = None, 0.0, None
    if detection is not None:
        detection_iou = iou(detection.box, item.box)
        first_correct_rank, average_precision = score_ranking(
            detection.results,
            image.pair_id,
            item.style,
            gallery,
            gallery_iou,
            gallery_garments[(image.pair_id, item.style)],
        )
    return ItemOutcome(
        image_id=image.image_id,
        item_key=item.key,
        pair_id=image.pair_id,
        style=item.style,
        category=item.category,
        detected=detection is not None,
        detection_iou=detection_iou,
        first_correct_rank=first_correct_rank,
        average_precision=average_precision,
    )


def retrieval_scores(outcomes: Sequence[ItemOutcome], ks: tuple[int, ...], recalled: int) -> RetrievalScores:
    """Top-k accuracy, mAP@20 and detection recall over the query garments' outcomes; ``recalled``
    counts the garments a detection found at IoU >= 0.5. Raises when there is no query garment."""
    if not outcomes:
        raise EvaluationInputError(
            "no query items: the queries hold no 'user' image with a garment of style > 0"
        )
    count = len(outcomes)
    return RetrievalScores(
        ks=ks,
        query_items=count,
        detected_items=sum(o.detected for o in outcomes),
        topk_accuracy={
            k: sum(o.first_correct_rank is not None and o.first_correct_rank <= k for o in outcomes) / count
            for k in ks
        },
        map_at_20=sum(o.average_precision for o in outcomes) / count,
        detection_recall_at_50=recalled / count,
        items=list(outcomes),
    )


def evaluate(
    queries: Sequence[ImageAnnotation],
    detections: Mapping[str, Sequence[QueryDetection]],
    gallery: Mapping[str, ImageAnnotation],
    *,
    category_match: CategoryMatch,
    ks: Sequence[int] = (1, 5, 10, 15, 20),
    gallery_iou: float = 0.5,
) -> RetrievalScores:
    """Score retrieval results with the DeepFashion2 protocol (see the module docstring).

    Args:
        queries: the query images; only ``source == "user"`` images' items with ``style > 0`` count.
        detections: query image id -> its detections, each with its ranked gallery crops; an image that is
            missing here has no detections.
        gallery: gallery image id -> annotation; every retrieved crop's image must be in it.
        category_match: decides whether a detection's category fits a ground-truth garment's.
        ks: the cut-offs of top-k accuracy.
        gallery_iou: the IoU a retrieved crop needs with the gallery garment to be correct.
    """
    ks = validated_ks(ks)
    if not 0.0 < gallery_iou <= 1.0:
        raise EvaluationInputError(f"gallery_iou must be in (0, 1], got {gallery_iou}")
    seen_ids = Counter(image.image_id for image in queries)
    duplicates = sorted(image_id for image_id, count in seen_ids.items() if count > 1)
    if duplicates:
        raise EvaluationInputError(f"query images appear more than once: {duplicates[:10]}")

    gallery_garments = gallery_garment_counts(gallery)
    outcomes: list[ItemOutcome] = []
    recalled = 0
    for image in queries:
        if image.source != "user":
            continue
        image_detections = detections.get(image.image_id, ())
        standing = _assign_detections(image, image_detections, category_match)
        for index, item in enumerate(image.items):
            if item.style <= 0:
                continue
            if any(
                category_match(d.category, item.category) and iou(d.box, item.box) >= DETECTION_RECALL_IOU
                for d in image_detections
            ):
                recalled += 1
            assigned = standing.get(index)
            detection = None if assigned is None else assigned[0]
            outcomes.append(item_outcome(image, item, detection, gallery, gallery_iou, gallery_garments))
    return retrieval_scores(outcomes, ks, recalled)
