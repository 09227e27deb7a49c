"""Training detectors and embedders for clothes on DeepFashion2-format data (see docs/evaluation.md)."""
