"""The paper's ablations as evaluation configurations (one table row each).

From the configured pipeline (m detectors → WBF, n embedders → concatenation, k-reciprocal
re-ranking): each detector alone vs WBF; each embedder alone vs concatenation; no re-ranking vs
k-reciprocal; PCA whitening, QE and DBA each on top of the full pipeline; and the ground-truth-box
mode (detection skipped) with and without re-ranking.
"""

from __future__ import annotations

from clothes_search.evaluation.runner import EvalConfig
from clothes_search.settings import Settings
from db.postprocessed_versions import PostprocessSpec

PCA_DIM = 256  # capped at the number of indexed vectors - 1 on small galleries
DBA_TOP_N = 2
QE_NOTE = "average query expansion (search.qe_top_n)"


def _names(configs: object) -> str:
    return " + ".join(c.name for c in configs)  # type: ignore[attr-defined]


def main_config(settings: Settings, *, ground_truth_boxes: bool = False) -> EvalConfig:
    """The configured pipeline as it serves, re-ranking from the settings."""
    rerank = settings.search.rerank
    detection = "ground-truth boxes" if ground_truth_boxes else f"WBF({_names(settings.detectors)})"
    return EvalConfig(
        name="ground-truth boxes" if ground_truth_boxes else "pipeline",
        description=f"{detection} → concat({_names(settings.embedders)}) → {rerank}",
        rerank=rerank,
        query_expansion=settings.search.query_expansion,
        ground_truth_boxes=ground_truth_boxes,
    )


def ablation_configs(settings: Settings) -> list[EvalConfig]:
    detectors, embedders = settings.detectors, settings.embedders
    concat, wbf = f"concat({_names(embedders)})", f"WBF({_names(detectors)})"
    full = EvalConfig("full", f"{wbf} → {concat} → k-reciprocal")
    rows: list[EvalConfig] = []
    if len(detectors) > 1:
        rows += [
            EvalConfig(f"detector: {d.name}", f"{d.name} alone → {concat} → k-reciprocal", detectors=(d,))
            for d in detectors
        ]
    rows.append(full)
    if len(embedders) > 1:
        rows += [
            EvalConfig(f"embedder: {e.name}", f"{wbf} → {e.name} alone → k-reciprocal", embedders=(e,))
            for e in embedders
        ]
    rows += [
        EvalConfig("no re-ranking", f"{wbf} → {concat} → cosine k-NN", rerank="none"),
        EvalConfig(
            "+ PCA whitening",
            f"full, index and queries PCA-whitened to ≤{PCA_DIM}-d",
            postprocess=PostprocessSpec(pca_dim=PCA_DIM),
        ),
        EvalConfig("+ QE", f"full + {QE_NOTE}", query_expansion=True),
        EvalConfig(
            "+ DBA", f"full, index DBA top-{DBA_TOP_N}", postprocess=PostprocessSpec(dba_top_n=DBA_TOP_N)
        ),
        EvalConfig(
            "GT boxes, no re-ranking",
            f"ground-truth boxes → {concat} → cosine k-NN",
            rerank="none",
            ground_truth_boxes=True,
        ),
        EvalConfig("GT boxes", f"ground-truth boxes → {concat} → k-reciprocal", ground_truth_boxes=True),
    ]
    return rows
