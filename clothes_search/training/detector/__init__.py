"""Fine-tuning a garment detector (FCOS / RetinaNet over EfficientNet-Lite); scoring detectors by box AP."""

from clothes_search.training.detector.average_precision import average_precision, box_ap
from clothes_search.training.detector.evaluate import DetectionScores, evaluate_detector
from clothes_search.training.detector.train import DetectorTrainingOptions, TrainingResult, train_detector

__all__ = [
    "DetectionScores",
    "DetectorTrainingOptions",
    "TrainingResult",
    "average_precision",
    "box_ap",
    "evaluate_detector",
    "train_detector",
]
