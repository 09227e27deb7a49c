"""Detector backends, chosen by name from configuration."""

from __future__ import annotations

from pathlib import Path

import torch

from clothes_search.settings import DetectorBackend, DetectorConfig
from ingestion.categories import CategoryVocabulary
from ingestion.detection import Detector
from ingestion.onnx_models import RuntimeChoice


def build_detector(
    config: DetectorConfig,
    vocabulary: CategoryVocabulary,
    *,
    models_dir: Path,
    device: torch.device,
    num_threads: int | None = None,
    shared: dict[tuple[object, ...], object] | None = None,
    runtime: RuntimeChoice | None = None,
) -> Detector:
    """The detector for ``config.backend``; its weights load later, on first use.

    ``shared`` (one dict per pipeline) lets detectors that run the same model share it:
    the MediaPipe keypoint and mask detectors run pose estimation once per image.
    """
    shared = {} if shared is None else shared
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
            from ingestion.detectors.pose_estimator import PoseEstimator

            model_dir = Path(config.options.get("model_dir", models_dir / "mediapipe"))
            max_people = int(config.options.get("max_people", 4))
            key = ("pose", model_dir.resolve(), max_people, num_threads)
            estimator = shared.setdefault(
                key, PoseEstimator(model_dir, max_people=max_people, num_threads=num_threads)
            )
            return MediaPipePoseDetector(
                config.name,
                model_dir,
                box_source=config.options.get("box_source", "keypoints"),
                score_threshold=config.score_threshold,
                min_visibility=float(config.options.get("min_visibility", 0.5)),
                estimator=estimator,
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
                runtime=runtime,
                runtime_override=config.runtime,
            )
    raise ValueError(f"unknown detector backend {config.backend!r}")
