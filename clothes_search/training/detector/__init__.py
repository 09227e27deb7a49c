"""Fine-tuning a garment detector (FCOS / RetinaNet over EfficientNet-Lite).

Scoring detectors by box AP lives with the evaluation: :mod:`clothes_search.evaluation.detection`.
"""

from clothes_search.training.detector.train import DetectorTrainingOptions, TrainingResult, train_detector

__all__ = ["DetectorTrainingOptions", "TrainingResult", "train_detector"]
