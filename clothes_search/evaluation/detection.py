"""Box AP@0.5 and detection recall of any detector of the pipeline on a DeepFashion2-format split.

Works for a trained checkpoint (loaded through the ``torchvision`` detector backend), for a single
:class:`~ingestion.detection.Detector`, and for a whole :class:`~ingestion.pipeline.Pipeline` (its m
detectors fused by WBF, the whole-image fallback included). Heuristic detectors name coarse groups
("top", "bottom", "full_body") or just "garment"; a detection counts for a ground-truth category when
its name is that category, the category's coarse group, or "garment".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from clothes_search.evaluation.average_precision import (
    CategoryMatch,
    ScoredBox,
    TruthBox,
    box_ap,
    detection_recall,
)
from clothes_search.evaluation.deepfashion2 import ImageAnnotation, read_split
from clothes_search.evaluation.protocol import default_category_match
from clothes_search.settings import CategorySettings
from ingestion.detection import Box

#: the score a trained detector's boxes need to count for recall: the pipeline's default threshold
RECALL_MIN_SCORE = 0.3


class _HasBox(Protocol):
    box: Box
    score: float
    category: str


class BoxSource(Protocol):
    """A detector or a pipeline: one list of scored, named boxes per image."""

    def detect(self, images: Sequence[Image.Image]) -> Sequence[Sequence[_HasBox]]: ...


@dataclass(frozen=True)
class DetectionScores:
    """Box AP@0.5 per ground-truth category and its mean, and detection recall@0.5.

    ``map50_by_source`` / ``recall50_by_source`` split the images into consumer photos ("user") and
    catalogue photos ("shop"). Recall counts the boxes scoring at least ``recall_min_score``.
    """

    images: int
    garments: int
    ap50: dict[str, float]
    map50: float
    recall50: float
    map50_by_source: dict[str, float]
    recall50_by_source: dict[str, float]
    recall_min_score: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def category_matcher(coarse: Mapping[str, str]) -> CategoryMatch:
    """Whether a detected name fits a ground-truth category: the retrieval protocol's own rule."""
    return default_category_match(coarse)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def score_detections(
    annotations: Sequence[ImageAnnotation],
    detections: Mapping[str, Sequence[ScoredBox]],
    *,
    matches: CategoryMatch,
    recall_min_score: float = 0.0,
) -> DetectionScores:
    """AP@0.5 and recall@0.5 of ``detections`` (image id -> boxes) against the split's garments."""
    truths = {a.image_id: [TruthBox(item.box, item.category) for item in a.items] for a in annotations}
    by_id = {item.category_id: item.category for a in annotations for item in a.items}
    categories = [by_id[category_id] for category_id in sorted(by_id)]
    ap = box_ap(detections, truths, categories, matches=matches)
    source_of = {a.image_id: a.source for a in annotations}
    map_by_source, recall_by_source = {}, {}
    for source in ("user", "shop"):
        subset = {image_id: t for image_id, t in truths.items() if source_of[image_id] == source}
        found = {image_id: d for image_id, d in detections.items() if image_id in subset}
        if any(subset.values()):
            map_by_source[source] = _mean(list(box_ap(found, subset, categories, matches=matches).values()))
            recall_by_source[source] = detection_recall(
                found, subset, matches=matches, min_score=recall_min_score
            )
    return DetectionScores(
        images=len(annotations),
        garments=sum(len(t) for t in truths.values()),
        ap50=ap,
        map50=_mean(list(ap.values())),
        recall50=detection_recall(detections, truths, matches=matches, min_score=recall_min_score),
        map50_by_source=map_by_source,
        recall50_by_source=recall_by_source,
        recall_min_score=recall_min_score,
    )


def run_detector(
    source: BoxSource,
    annotations: Sequence[ImageAnnotation],
    *,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[ScoredBox]]:
    """Detect garments in every image of the split: image id -> its boxes in that image's pixels."""
    detections: dict[str, list[ScoredBox]] = {}
    for start in range(0, len(annotations), batch_size):
        chunk = annotations[start : start + batch_size]
        images = []
        for annotation in chunk:
            with Image.open(annotation.image_path) as raw:
                images.append(raw.convert("RGB"))
        for annotation, found in zip(chunk, source.detect(images), strict=True):
            detections[annotation.image_id] = [
                ScoredBox((d.box.x1, d.box.y1, d.box.x2, d.box.y2), float(d.score), d.category) for d in found
            ]
        if progress is not None:
            progress(start + len(chunk), len(annotations))
    return detections


def checkpoint_detector(
    checkpoint: Path, *, device: torch.device | None = None, categories: CategorySettings | None = None
) -> BoxSource:
    """A trained checkpoint behind the ``torchvision`` detector backend, keeping every box (for AP)."""
    from ingestion.categories import CategoryVocabulary
    from ingestion.detectors.torchvision_detector import TorchvisionDetector

    vocabulary = CategoryVocabulary(categories or CategorySettings())
    return TorchvisionDetector("trained", checkpoint, vocabulary, score_threshold=0.0, device=device)


def evaluate_detector(
    detector: Path | BoxSource,
    split: Path,
    *,
    categories: CategorySettings | None = None,
    device: torch.device | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> DetectionScores:
    """Box AP@0.5 and recall@0.5 of a detector checkpoint, a ``Detector`` or a ``Pipeline`` on ``split``.

    A checkpoint path is loaded through the ``torchvision`` backend with every box kept; its recall counts
    boxes scoring at least :data:`RECALL_MIN_SCORE` (the pipeline's default detector threshold). A
    detector or pipeline is scored as configured: its own thresholds decide which boxes it returns.
    """
    categories = categories or CategorySettings()
    recall_min_score = 0.0
    if isinstance(detector, Path | str):
        detector = checkpoint_detector(Path(detector), device=device, categories=categories)
        recall_min_score = RECALL_MIN_SCORE
    annotations = read_split(split)
    detections = run_detector(detector, annotations, batch_size=batch_size, progress=progress)
    return score_detections(
        annotations,
        detections,
        matches=category_matcher(categories.coarse),
        recall_min_score=recall_min_score,
    )
