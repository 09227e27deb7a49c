"""The DeepFashion2 Clothes Retrieval challenge's own scoring, and the files its script reads.

Reimplements ``deepfashion2_api/PythonAPI/deepfashion2_retrieval_test.py`` of the DeepFashion2
repository rule for rule, so that our figures compare with published ones:

1. **Assignment.** Each detection of a query image is assigned to the image's ground-truth garment
   with the largest IoU among *all* of them (style 0 included), the first one on ties — ``np.argmax``,
   so a detection that overlaps no garment goes to the image's first garment.
2. **Class.** A query garment (style > 0) is represented by the highest-scoring detection assigned to
   it whose class id equals the garment's ``category_id`` exactly (the first one on ties); a coarse
   (``top``) or category-agnostic (``garment``) detection never does. Without one, the garment is
   missed, and still counts in the denominator.
3. **Correctness.** A returned gallery box is correct when its image has a garment of the query's
   ``pair_id`` and style with IoU ≥ 0.5 (the same rule as :mod:`clothes_search.evaluation.protocol`).

The results file (:func:`results_rows`) has one record per detection: ``query_image_id``,
``query_bbox`` ``[x1, y1, x2, y2]``, ``query_cls`` (1–13; 0 for a class outside DeepFashion2's),
``query_score``, ``gallery_image_id`` and ``gallery_bbox`` (20 each: the script reads all 20, so a
shorter list is padded with its last entry, which cannot change a rank). :func:`query_gt_rows` /
:func:`gallery_gt_rows` write the ground truth it needs for a split in DeepFashion2's format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clothes_search.evaluation.deepfashion2 import CATEGORY_NAMES, ImageAnnotation
from clothes_search.evaluation.protocol import (
    DETECTION_RECALL_IOU,
    ItemOutcome,
    QueryDetection,
    RetrievalScores,
    gallery_garment_counts,
    iou,
    item_outcome,
    retrieval_scores,
    validated_ks,
)

RESULTS_PER_DETECTION = 20
_CLASS_IDS = {name.replace(" ", "_"): index for index, name in enumerate(CATEGORY_NAMES, start=1)}


def class_id(category: str) -> int:
    """DeepFashion2's ``category_id`` of one of our category names (``long_sleeve_top`` -> 2), or 0."""
    return _CLASS_IDS.get(category, 0)


def _first_max(values: Sequence[float]) -> int:
    """The index of the largest value, the first on ties (``np.argmax``); 0 for all-equal values."""
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


def evaluate_official(
    queries: Sequence[ImageAnnotation],
    detections: Mapping[str, Sequence[QueryDetection]],
    gallery: Mapping[str, ImageAnnotation],
    *,
    ks: Sequence[int] = (1, 5, 10, 15, 20),
    gallery_iou: float = 0.5,
) -> RetrievalScores:
    """Score retrieval results with the challenge's rules (see the module docstring).

    ``mAP@20`` (which the challenge's script does not compute) is reported with the same assignment;
    ``detection_recall_at_50`` counts a query garment when a detection of its exact class overlaps it
    with IoU ≥ 0.5.
    """
    ks = validated_ks(ks)
    gallery_garments = gallery_garment_counts(gallery)
    outcomes: list[ItemOutcome] = []
    recalled = 0
    for image in queries:
        if image.source != "user":
            continue
        found = list(detections.get(image.image_id, ()))
        assigned = (
            [_first_max([iou(d.box, item.box) for item in image.items]) for d in found] if image.items else []
        )
        for index, item in enumerate(image.items):
            if item.style <= 0:
                continue
            same_class = [d for d in found if class_id(d.category) == item.category_id]
            if any(iou(d.box, item.box) >= DETECTION_RECALL_IOU for d in same_class):
                recalled += 1
            standing = [
                d for d, target in zip(found, assigned, strict=True)
                if target == index and class_id(d.category) == item.category_id
            ]  # fmt: skip
            detection = standing[_first_max([d.score for d in standing])] if standing else None
            outcomes.append(item_outcome(image, item, detection, gallery, gallery_iou, gallery_garments))
    return retrieval_scores(outcomes, ks, recalled)


def image_id_value(image_id: str) -> int | str:
    """An image id as DeepFashion2's files write it: ``"000123"`` -> ``123``."""
    return int(image_id) if image_id.isdigit() else image_id


def results_rows(detections: Mapping[str, Sequence[QueryDetection]]) -> list[dict[str, Any]]:
    """The challenge's results file: one record per detection that retrieved something."""
    rows = []
    for image_id, found in detections.items():
        for detection in found:
            if not detection.results:
                continue
            results = list(detection.results[:RESULTS_PER_DETECTION])
            results += [results[-1]] * (RESULTS_PER_DETECTION - len(results))
            rows.append(
                {
                    "query_image_id": image_id_value(image_id),
                    "query_bbox": [round(v, 2) for v in detection.box],
                    "query_cls": class_id(detection.category),
                    "query_score": round(float(detection.score), 6),
                    "gallery_image_id": [image_id_value(r.gallery_image_id) for r in results],
                    "gallery_bbox": [[round(v, 2) for v in r.box] for r in results],
                }
            )
    return rows


def query_gt_rows(queries: Sequence[ImageAnnotation]) -> list[dict[str, Any]]:
    """``query_gt.json``: every garment of every consumer image (style 0 too: it takes part in the
    assignment)."""
    return [
        {
            "query_image_id": image_id_value(image.image_id),
            "bbox": list(item.box),
            "cls": item.category_id,
            "style": item.style,
            "pair_id": image.pair_id,
        }
        for image in queries
        if image.source == "user"
        for item in image.items
    ]


def gallery_gt_rows(gallery: Mapping[str, ImageAnnotation]) -> list[dict[str, Any]]:
    """``gallery_gt.json``: every garment of every shop image."""
    return [
        {
            "gallery_image_id": image_id_value(image.image_id),
            "bbox": list(item.box),
            "style": item.style,
            "pair_id": image.pair_id,
        }
        for image in gallery.values()
        for item in image.items
    ]
