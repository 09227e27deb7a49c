"""Detector backends, chosen by name from configuration."""

from __future__ import annotations

from pathlib import Path

import torch

from clothes_search.settings import DetectorBackend, DetectorConfig
from ingestion.categories import CategoryVocabulary
from ingestion.detection import Detector


def build_detector(
    config: DetectorConfig,
    vocabulary: CategoryVocabulary,
    *,
    models_dir: Path,
    device: torch.device,
    num_threads: int | None = None,
) -> Detector:
    """The detector for ``config.backend``; its weights load later, on first use."""
    match config.backend:
        case DetectorBackend.WHOLE_IMAGE:
            from ingestion.detectors.whole_image import WholeImageDetector

            return WholeImageDetector(
                config.name,
                category=vocabulary.canonical(str(config.options.get("category", "garment"))),
                score=float(config.options.get("score", 1.0)),
            )
        case DetectorBackend.MEDIAPIPE_POSE:
            from ingestion.detectors.mediapipe_pose import MediaPipePoseDetector

            return MediaPipePoseDetector(
                config.name,
                Path(config.options.get("model_dir", models_dir / "mediapipe")),
                box_source=config.options.get("box_source", "keypoints"),
                score_threshold=config.score_threshold,
                max_people=int(config.options.get("max_people", 4)),
                min_visibility=float(config.options.get("min_visibility", 0.5)),
                num_threads=num_threads,
            )
        case DetectorBackend.TORCHVISION:
            from ingestion.detectors.torchvision_detector import TorchvisionDetector

            return TorchvisionDetector(
                config.name,
                config.checkpoint,
                vocabulary,
                arch=config.model,
                categories=config.categories,
                score_threshold=config.score_threshold,
                device=device,
                options=config.options,
            )
    raise ValueError(f"unknown detector backend {config.backend!r}")
