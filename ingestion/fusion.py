"""Weighted Boxes Fusion of the m detectors' boxes (ensemble-boxes), made safe for workers.

``ensemble_boxes.weighted_boxes_fusion`` takes boxes normalised to [0, 1] and calls
``exit()`` on some malformed inputs; :func:`fuse_detections` validates and cleans the
input first so that never happens, and maps results back to xyxy pixels.

Boxes are fused within a category *group* (see :class:`CategoryVocabulary`): a fine
``trousers`` and a coarse ``bottom`` can agree. A fused box is named after the most
specific category among its members (ties: the highest summed score). Boxes of different groups
that overlap by ``same_garment_iou`` or more are one garment under two class hypotheses (FCOS, for
one, regresses one box per location and scores every class on it): the higher-scoring one stays,
and the others' classes become its ``alternatives``.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from ensemble_boxes import weighted_boxes_fusion

from clothes_search.settings import FusionSettings
from ingestion.categories import CategoryVocabulary
from ingestion.detection import Box, Detection, FusedDetection
from ingestion.errors import FusionError


def _validated_weights(detector_names: Sequence[str], weights: Sequence[float]) -> list[float]:
    if len(weights) != len(detector_names):
        raise FusionError(
            f"{len(weights)} fusion weights for {len(detector_names)} detectors {list(detector_names)}"
        )
    if len(set(detector_names)) != len(detector_names):
        raise FusionError(f"detector names must be unique: {list(detector_names)}")
    clean = [float(w) for w in weights]
    if any(not math.isfinite(w) or w < 0 for w in clean):
        raise FusionError(f"fusion weights must be finite and >= 0, got {clean}")
    if sum(clean) <= 0:
        raise FusionError("at least one detector needs a positive fusion weight")
    return clean


def _usable(det: Detection, width: int, height: int, min_area: float) -> Box | None:
    """The detection's box clipped to the image, or None when it is unusable (NaN, empty, tiny)."""
    if not det.box.is_finite() or not math.isfinite(det.score):
        return None
    box = det.box
    # a detector that swapped corners still meant this box
    box = Box(min(box.x1, box.x2), min(box.y1, box.y2), max(box.x1, box.x2), max(box.y1, box.y2))
    box = box.clipped(width, height)
    if box.area <= max(min_area, 0.0) or box.width < 1 or box.height < 1:
        return None
    return box


def fuse_detections(
    per_detector: Sequence[Sequence[Detection]],
    detector_names: Sequence[str],
    weights: Sequence[float],
    image_size: tuple[int, int],
    vocabulary: CategoryVocabulary,
    settings: FusionSettings,
) -> list[FusedDetection]:
    """Fuse one image's detections from m detectors with Weighted Boxes Fusion.

    Args:
        per_detector: ``per_detector[i]`` holds detector i's detections, xyxy pixels.
        detector_names: the m detectors' names, in the same order.
        weights: the m WBF weights (>= 0, not all zero).
        image_size: ``(width, height)`` in pixels.
    Returns:
        Fused detections in xyxy pixels, highest score first; ``detectors`` lists which
        detectors had a box in the cluster (same group, IoU >= ``iou_thr`` with the result).
    """
    if len(per_detector) != len(detector_names):
        raise FusionError(f"{len(per_detector)} detection lists for {len(detector_names)} detectors")
    clean_weights = _validated_weights(detector_names, weights)
    width, height = image_size
    if width <= 0 or height <= 0:
        raise FusionError(f"invalid image size {image_size}")
    min_area = settings.min_box_fraction * width * height

    groups: list[str] = []
    group_index: dict[str, int] = {}
    boxes_list: list[np.ndarray] = []
    scores_list: list[np.ndarray] = []
    labels_list: list[np.ndarray] = []
    kept: list[list[tuple[Box, Detection]]] = []
    for detections in per_detector:
        rows: list[tuple[Box, Detection]] = []
        for det in detections:
            box = _usable(det, width, height, min_area)
            if box is not None and det.score > 0:
                rows.append((box, det))
        kept.append(rows)
        for _, det in rows:
            group = vocabulary.group(det.category)
            if group not in group_index:
                group_index[group] = len(groups)
                groups.append(group)
        boxes_list.append(
            np.array(
                [[b.x1 / width, b.y1 / height, b.x2 / width, b.y2 / height] for b, _ in rows], dtype=float
            ).reshape(-1, 4)
        )
        scores_list.append(np.array([min(d.score, 1.0) for _, d in rows], dtype=float))
        labels_list.append(
            np.array([group_index[vocabulary.group(d.category)] for _, d in rows], dtype=float)
        )

    if not any(len(rows) for rows in kept):
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inputs are already clipped; ensemble-boxes warns on float noise
        fused_boxes, fused_scores, fused_labels = weighted_boxes_fusion(
            boxes_list,
            scores_list,
            labels_list,
            weights=clean_weights,
            iou_thr=settings.iou_thr,
            skip_box_thr=settings.skip_box_thr,
            conf_type=settings.conf_type,
        )

    results: list[FusedDetection] = []
    for norm_box, score, label in zip(fused_boxes, fused_scores, fused_labels, strict=True):
        if score < settings.min_score:
            continue
        x1, y1, x2, y2 = (float(v) for v in norm_box)
        box = Box(x1 * width, y1 * height, x2 * width, y2 * height)
        group = groups[int(label)]
        members = _cluster_members(box, group, kept, detector_names, vocabulary, settings.iou_thr)
        category = _name_cluster(members, group, vocabulary)
        results.append(
            FusedDetection(
                box=box,
                score=float(score),
                category=category,
                detectors=tuple(sorted({name for name, _ in members}, key=list(detector_names).index)),
                alternatives=_other_classes(box, category, float(score), kept, vocabulary, settings.iou_thr),
            )
        )
    results.sort(key=lambda f: f.score, reverse=True)
    return _one_per_garment(results, settings.same_garment_iou)


def _one_per_garment(fused: Sequence[FusedDetection], same_garment_iou: float) -> list[FusedDetection]:
    """Greedy class-agnostic suppression, highest score first (``fused`` is sorted so): a suppressed
    box's class becomes one of the ``alternatives`` of the garment that suppressed it."""
    if same_garment_iou >= 1.0:
        return list(fused)
    kept: list[FusedDetection] = []
    for detection in fused:
        owner = next((i for i, k in enumerate(kept) if detection.box.iou(k.box) >= same_garment_iou), None)
        if owner is None:
            kept.append(detection)
            continue
        garment = kept[owner]
        alternatives = list(garment.alternatives)
        for category, score in ((detection.category, detection.score), *detection.alternatives):
            if category != garment.category and all(category != known for known, _ in alternatives):
                alternatives.append((category, score))
        alternatives.sort(key=lambda pair: pair[1], reverse=True)
        kept[owner] = replace(garment, alternatives=tuple(alternatives))
    return kept


def _cluster_members(
    fused: Box,
    group: str,
    kept: Sequence[Sequence[tuple[Box, Detection]]],
    detector_names: Sequence[str],
    vocabulary: CategoryVocabulary,
    iou_thr: float,
) -> list[tuple[str, Detection]]:
    members: list[tuple[str, Detection]] = []
    for name, rows in zip(detector_names, kept, strict=True):
        best = max(
            ((box.iou(fused), det) for box, det in rows if vocabulary.group(det.category) == group),
            default=None,
            key=lambda pair: pair[0],
        )
        if best is not None and best[0] >= iou_thr:
            members.append((name, best[1]))
    return members


def _other_classes(
    fused: Box,
    category: str,
    score: float,
    kept: Sequence[Sequence[tuple[Box, Detection]]],
    vocabulary: CategoryVocabulary,
    iou_thr: float,
) -> tuple[tuple[str, float], ...]:
    """The other categories, as specific as ``category``, that any detector gave a box of this cluster
    (same group, IoU >= ``iou_thr`` with the fused box): ``(category, score)``, highest first. A
    category's score is its best box's score relative to the best box of ``category``, times the
    fused ``score`` (capped there), so it reads on the garment's own scale."""
    group = vocabulary.group(category)
    best: dict[str, float] = defaultdict(float)
    for rows in kept:
        for box, det in rows:
            if vocabulary.group(det.category) == group and box.iou(fused) >= iou_thr:
                best[det.category] = max(best[det.category], det.score)
    own = best.get(category, 0.0)
    others = [
        (name, min(score, score * value / own) if own > 0 else score)
        for name, value in best.items()
        if name != category and vocabulary.specificity(name) >= vocabulary.specificity(category)
    ]
    return tuple(sorted(others, key=lambda pair: pair[1], reverse=True))


def _name_cluster(
    members: Sequence[tuple[str, Detection]], group: str, vocabulary: CategoryVocabulary
) -> str:
    if not members:
        return group
    totals: dict[str, float] = defaultdict(float)
    for _, det in members:
        totals[det.category] += det.score
    return max(totals, key=lambda c: (vocabulary.specificity(c), totals[c]))
