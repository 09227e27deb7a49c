"""``eval --tune``: choose post-processing parameters on the train split, apply them unchanged elsewhere.

Searched, each by the mean of the top-1/5/10/15/20 accuracies of the protocol on the train split:

- **re-ranking** (none, or k-reciprocal over a k1 × k2 × λ grid), with the configured pipeline: the
  query garments go once through the search service's own stages (:mod:`search.query_stages`:
  choose garments, embed, ANN top-K' with the candidates' stored vectors, crop rows), then every
  parameter set re-orders the same candidates with the service's :func:`reorder_candidates` and
  :func:`rank_matches`;
- **per-model concatenation weights**, in ground-truth-box mode (isolates the embeddings): each
  model's L2-normalised features of the train crops are computed once and re-weighted in numpy
  (:func:`ingestion.signature.concatenate_features`), gallery ranked by cosine similarity.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clothes_search.evaluation.average_precision import ScoredBox
from clothes_search.evaluation.deepfashion2 import GarmentAnnotation, ImageAnnotation, read_split
from clothes_search.evaluation.detection import score_detections
from clothes_search.evaluation.protocol import (
    QueryDetection,
    RetrievalScores,
    RetrievedCrop,
    default_category_match,
    evaluate,
)
from clothes_search.evaluation.runner import (
    RESULTS_PER_QUERY,
    EvalConfig,
    Evaluation,
    annotated_garment,
    hypotheses,
)
from clothes_search.settings import FusionSettings, Settings
from ingestion.detection import Box, Detection, FusedDetection
from ingestion.fusion import fuse_detections
from ingestion.images import load_image
from ingestion.pipeline import Pipeline
from ingestion.signature import concatenate_features
from search.query_stages import (
    Candidates,
    CropRow,
    NoGarmentFoundError,
    ReorderParams,
    choose_garments,
    crop_rows,
    embed_garments,
    find_candidates,
    live_index,
    rank_matches,
    reorder_candidates,
)

K1_GRID = (5, 10, 20)
K2_GRID = (1, 3, 6)
LAMBDA_GRID = (0.3, 0.6, 0.9)
WEIGHT_GRID = (0.5, 1.0, 2.0)  # relative to the first model's weight (fixed at 1)


@dataclass(frozen=True)
class RerankChoice:
    """``k1 = 0``: no re-ranking (cosine order)."""

    k1: int = 0
    k2: int = 0
    lambda_value: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.k1 > 0

    def describe(self) -> str:
        return f"k-reciprocal k1={self.k1} k2={self.k2} λ={self.lambda_value}" if self.enabled else "none"

    def params(self) -> ReorderParams:
        """The search service's re-ordering for this choice."""
        if not self.enabled:
            return ReorderParams()
        return ReorderParams(rerank="k_reciprocal", k1=self.k1, k2=self.k2, lambda_value=self.lambda_value)


@dataclass
class Trial:
    """One setting tried: its metrics (column -> value) and the objective it was chosen by."""

    label: str
    metrics: dict[str, float]
    objective: float
    scores: RetrievalScores | None = None


def retrieval_trial(label: str, scores: RetrievalScores) -> Trial:
    """Retrieval trials are chosen by the mean of their top-k accuracies."""
    metrics = {f"top-{k}": v for k, v in scores.topk_accuracy.items()}
    return Trial(label, metrics, float(np.mean(list(metrics.values()))), scores)


@dataclass
class _Candidates:
    garment: FusedDetection  # box, class and alternatives (the annotated class with --gt-boxes)
    probe: np.ndarray  # (d,) the query vector in the index's space
    found: Candidates  # the ANN candidates with their stored vectors
    rows: dict[int, CropRow]  # their crop rows (the database is the truth)


def rerank_grid() -> list[RerankChoice]:
    grid = [RerankChoice(k1, k2, lam) for k1, k2, lam in itertools.product(K1_GRID, K2_GRID, LAMBDA_GRID)]
    return [RerankChoice(), *grid]


def tune_rerank(
    evaluation: Evaluation, config: EvalConfig, progress: Callable[[str], None]
) -> tuple[RerankChoice, list[Trial]]:
    """The best re-ranking for ``config``'s pipeline on ``evaluation``'s split, and every trial."""
    candidates = _collect_candidates(evaluation, config)
    trials: list[tuple[RerankChoice, Trial]] = []
    for choice in rerank_grid():
        detections = {
            image_id: [d for c in garments for d in _ranked(evaluation, c, choice)]
            for image_id, garments in candidates.items()
        }
        scores = _evaluate(evaluation, detections)
        trials.append((choice, retrieval_trial(choice.describe(), scores)))
    best = max(trials, key=lambda t: t[1].objective)
    progress(f"re-ranking: best {best[0].describe()} (objective {best[1].objective:.3f})")
    return best[0], [t for _, t in trials]


def tune_concat_weights(
    evaluation: Evaluation, progress: Callable[[str], None]
) -> tuple[tuple[float, ...], list[Trial]]:
    """Per-model weights of the concatenation, in ground-truth-box mode, cosine ranking."""
    pipeline = Pipeline(evaluation.settings)  # models only: no gallery index needed
    pipeline.load()
    embedders = pipeline.embedders
    gallery_keys, gallery_features = _gt_features(evaluation, pipeline, list(evaluation.gallery.values()))
    query_keys, query_features = _gt_features(evaluation, pipeline, evaluation.queries, styled_only=True)
    trials: list[tuple[tuple[float, ...], Trial]] = []
    for rest in itertools.product(WEIGHT_GRID, repeat=len(embedders) - 1):
        weights = (1.0, *rest)
        gallery = concatenate_features(gallery_features, weights)
        queries = concatenate_features(query_features, weights)
        order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :RESULTS_PER_QUERY]
        detections: dict[str, list[QueryDetection]] = {}
        for (image_id, item), row in zip(query_keys, order, strict=True):
            results = tuple(RetrievedCrop(gallery_keys[j][0], gallery_keys[j][1].box) for j in row)
            detections.setdefault(image_id, []).append(QueryDetection(item.box, item.category, 1.0, results))
        label = "weights " + ", ".join(f"{e.name}={w:g}" for e, w in zip(embedders, weights, strict=True))
        trials.append((weights, retrieval_trial(label, _evaluate(evaluation, detections))))
    best = max(trials, key=lambda t: t[1].objective)
    progress(f"concatenation: best {best[1].label} (objective {best[1].objective:.3f})")
    return best[0], [t for _, t in trials]


def _evaluate(evaluation: Evaluation, detections: dict[str, list[QueryDetection]]) -> RetrievalScores:
    return evaluate(
        evaluation.queries, detections, evaluation.gallery, category_match=evaluation.category_match
    )


def _ranked(evaluation: Evaluation, candidates: _Candidates, choice: RerankChoice) -> list[QueryDetection]:
    """The garment's detections with its results under ``choice``, exactly as the search service orders
    and filters them (one per class hypothesis, as ``eval`` scores them)."""
    ids, scores = reorder_candidates(candidates.probe, candidates.found, choice.params())
    matches = rank_matches(ids, scores, candidates.rows, RESULTS_PER_QUERY, collapse=False)
    results = tuple(RetrievedCrop(evaluation.image_of_sku[m.sku], tuple(m.crop_box)) for m in matches)
    return hypotheses(candidates.garment, results)


def _collect_candidates(evaluation: Evaluation, config: EvalConfig) -> dict[str, list[_Candidates]]:
    """Detect, embed and search every query once; keep the candidates with their vectors and rows."""
    services = evaluation.index_services(config)
    pipeline = services.pipeline
    depth = services.settings.search.rerank_depth
    index = live_index(services.database, pipeline.signature.hash)
    out: dict[str, list[_Candidates]] = {}
    for annotation in evaluation.queries:
        image = load_image(annotation.image_path, services.settings.fetch).image
        garments: list[FusedDetection]
        if config.ground_truth_boxes:
            boxes = [Box(*item.box) for item in annotation.items if item.style > 0]
            categories = [item.category for item in annotation.items if item.style > 0]
            garments = [
                replace(g, category=category)
                for box, category in zip(boxes, categories, strict=True)
                for g in choose_garments(pipeline, image, box)
            ]
        else:
            try:
                garments = choose_garments(pipeline, image, "all")
            except NoGarmentFoundError:
                garments = []
        if not garments:
            out[annotation.image_id] = []
            continue
        vectors = index.query_vectors(embed_garments(pipeline, image, garments))
        found = find_candidates(services.store, index, vectors, limit=depth, with_vectors=True)
        rows = crop_rows(services.database, index.rows_version_id, [i for f in found for i in f.ids])
        out[annotation.image_id] = [
            _Candidates(
                garment=garment,
                probe=vector,
                found=candidates,
                rows={i: rows[i] for i in candidates.ids if i in rows},
            )
            for garment, vector, candidates in zip(garments, vectors, found, strict=True)
        ]
    return out


def _gt_features(
    evaluation: Evaluation,
    pipeline: Pipeline,
    annotations: Sequence[ImageAnnotation],
    styled_only: bool = False,
) -> tuple[list[tuple[str, GarmentAnnotation]], list[np.ndarray]]:
    """Each model's features of the annotated garments' crops: (image id, garment) keys, (N, d_i) arrays."""
    keys: list[tuple[str, GarmentAnnotation]] = []
    crops = []
    for annotation in annotations:
        items = [item for item in annotation.items if item.style > 0 or not styled_only]
        if not items:
            continue
        image = load_image(annotation.image_path, evaluation.settings.fetch).image
        garments = [annotated_garment(item) for item in items]
        crops.extend(pipeline.crop_garments(image, garments))
        keys.extend((annotation.image_id, item) for item in items)
    batch = evaluation.settings.pipeline.effective_forward_batch_size()
    return keys, [embedder.embed(crops, batch_size=batch) for embedder in pipeline.embedders]


def apply_tuning(
    settings: Settings,
    rerank: RerankChoice,
    weights: Sequence[float] | None,
    fusion: FusionSettings | None = None,
) -> Settings:
    """The settings with the chosen re-ranking, concatenation weights and WBF thresholds."""
    search = settings.search.model_copy(
        update={
            "rerank": "k_reciprocal",
            "k1": rerank.k1,
            "k2": rerank.k2,
            "lambda_value": rerank.lambda_value,
        }
        if rerank.enabled
        else {"rerank": "none"}
    )
    embedders = settings.embedders
    if weights is not None:
        embedders = [e.model_copy(update={"weight": w}) for e, w in zip(embedders, weights, strict=True)]
    return settings.model_copy(
        update={"search": search, "embedders": embedders, "fusion": fusion or settings.fusion}
    )


def tuned_toml(settings: Settings) -> str:
    """A config-file fragment with the tuned values (``clothes-search --config tuned.toml ...``)."""
    s = settings.search
    lines = [
        "# chosen by `clothes-search eval --tune` on the train split",
        "[search]",
        f'rerank = "{s.rerank}"',
    ]
    if s.rerank == "k_reciprocal":
        lines += [f"k1 = {s.k1}", f"k2 = {s.k2}", f"lambda_value = {s.lambda_value}"]
    f = settings.fusion
    lines += ["", "[fusion]", f"iou_thr = {f.iou_thr}", f"skip_box_thr = {f.skip_box_thr}"]
    lines.append(f'conf_type = "{f.conf_type}"')
    for embedder in settings.embedders:
        lines += ["", "[[embedders]]"]
        fields = embedder.model_dump(mode="json", exclude_defaults=True)
        fields.setdefault("weight", embedder.weight)
        lines += [
            f"{key} = {json.dumps(value)}" for key, value in fields.items() if not isinstance(value, dict)
        ]
        if embedder.options:
            lines.append(
                f"options = {{ {', '.join(f'{k} = {json.dumps(v)}' for k, v in embedder.options.items())} }}"
            )
    return "\n".join(lines) + "\n"


def trials_table(title: str, trials: Sequence[Trial]) -> str:
    """Markdown: one row per trial, best objective first."""
    columns = list(dict.fromkeys(c for t in trials for c in t.metrics))
    rows = [f"| {title} | " + " | ".join(columns) + " | objective |", "|" + "---|" * (len(columns) + 2)]
    for trial in sorted(trials, key=lambda t: -t.objective):
        cells = " | ".join(f"{trial.metrics[c]:.3f}" if c in trial.metrics else "–" for c in columns)
        rows.append(f"| {trial.label} | {cells} | {trial.objective:.3f} |")
    return "\n".join(rows)


IOU_GRID = (0.4, 0.55, 0.7)
SKIP_GRID = (0.0, 0.1, 0.3)
CONF_TYPES = ("avg", "max", "box_and_model_avg")


def tune_fusion(
    settings: Settings, split_dir: Path, progress: Callable[[str], None]
) -> tuple[FusionSettings, list[Trial]]:
    """WBF thresholds by box AP@0.5 on the split's photos (each detector runs once; fused per setting)."""
    pipeline = Pipeline(settings)
    pipeline.load()
    annotations = read_split(split_dir)
    raw: dict[str, list[list[Detection]]] = {}  # image id -> per detector, its detections
    sizes: dict[str, tuple[int, int]] = {}
    for start in range(0, len(annotations), settings.pipeline.batch_size):
        chunk = annotations[start : start + settings.pipeline.batch_size]
        images = [load_image(a.image_path, settings.fetch).image for a in chunk]
        found = [detector.detect(images) for detector in pipeline.detectors]
        for index, (annotation, image) in enumerate(zip(chunk, images, strict=True)):
            raw[annotation.image_id] = [per_image[index] for per_image in found]
            sizes[annotation.image_id] = image.size
    names = [d.name for d in pipeline.detectors]
    matches = default_category_match(dict(settings.categories.coarse))
    trials: list[tuple[FusionSettings, Trial]] = []
    for iou_thr, skip, conf_type in itertools.product(IOU_GRID, SKIP_GRID, CONF_TYPES):
        fusion = settings.fusion.model_copy(
            update={"iou_thr": iou_thr, "skip_box_thr": skip, "conf_type": conf_type}
        )
        fused = {
            a.image_id: [
                ScoredBox((f.box.x1, f.box.y1, f.box.x2, f.box.y2), f.score, f.category)
                for f in fuse_detections(
                    raw[a.image_id],
                    names,
                    pipeline.detector_weights,
                    sizes[a.image_id],
                    pipeline.vocabulary,
                    fusion,
                )
            ]
            for a in annotations
        }
        scores = score_detections(annotations, fused, matches=matches)
        label = f"iou_thr={iou_thr} skip_box_thr={skip} conf_type={conf_type}"
        metrics = {"box mAP@0.5": scores.map50, "recall@0.5": scores.recall50}
        trials.append((fusion, Trial(label, metrics, objective=scores.map50)))
    best = max(trials, key=lambda t: t[1].objective)
    progress(f"fusion: best {best[1].label} (box mAP@0.5 {best[1].objective:.3f})")
    return best[0], [t for _, t in trials]
