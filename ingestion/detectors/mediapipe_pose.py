"""Garment boxes from MediaPipe BlazePose: landmarks (``keypoints``) or person mask (``mask``).

Runs MediaPipe's ``pose_detection.tflite`` and ``pose_landmark_full.tflite`` with ai-edge-litert
(no ``mediapipe`` package, whose pins clash with ours); pre/post-processing is in
:mod:`ingestion.detectors.blazepose`. Per image: the pose detector finds up to ``max_people``
people, the landmark model gives each one 33 landmarks, a pose-presence score and a
segmentation of the person's ROI. Garments:

* ``top``: shoulders (11, 12) visible; shoulders, elbows (when visible) and hips, plus margins
  for sleeves/collar, down to just below the hips.
* ``bottom``: hips and knees (23-26) visible; from the waist (above the hip joints) to the
  ankles, or to just below the knees when the ankles are not visible (shorts, cropped photo).
* ``full_body``: shoulders, hips, knees and ankles visible; shoulders to ankles.
* ``footwear``: one box per foot whose ankle, heel and foot index (27/29/31, 28/30/32) are visible.

``mask`` mode takes each of these regions, widens it sideways, and shrinks it to the person's
segmentation pixels inside, so its boxes follow the silhouette rather than the skeleton. The
mask is the landmark model's own segmentation output, mapped back from the ROI: it belongs to
that one person (the selfie model segments everyone in the frame at once), it is computed over
the person's crop (sharper than the whole image squeezed to 256 x 256, and made for full bodies
rather than close-up selfies), and it costs no extra inference.

Score: pose presence x mean visibility of the garment's defining landmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from ingestion.detection import Box, Detection, Detector
from ingestion.detectors.pose_estimator import MODEL_FILES, PoseEstimate, PoseEstimator
from ingestion.errors import ModelConfigError, ModelWeightsMissingError

CATEGORIES = ("top", "bottom", "full_body", "footwear")

SHOULDERS, ELBOWS, HIPS, KNEES, ANKLES = (11, 12), (13, 14), (23, 24), (25, 26), (27, 28)
FEET = ((27, 29, 31), (28, 30, 32))  # ankle, heel, foot index; left then right


def garment_regions(pose: PoseEstimate, min_visibility: float) -> list[tuple[str, np.ndarray, float]]:
    """``(category, xyxy box (4,), score)`` for every garment whose landmarks are visible.

    Boxes are in image pixels, not clipped. Margins are fractions of the torso length
    (shoulder centre to hip centre) and of the hip width, so they scale with the person.
    """
    pts, vis = pose.points, pose.visibility

    def visible(*idx: int) -> bool:
        return bool(np.all(vis[list(idx)] >= min_visibility))

    def score(*idx: int) -> float:
        return float(pose.presence * np.mean(vis[list(idx)]))

    def extent(p: np.ndarray, mx: float, top: float, bottom: float) -> np.ndarray:
        return np.array([p[:, 0].min() - mx, p[:, 1].min() - top, p[:, 0].max() + mx, p[:, 1].max() + bottom])

    torso = max(1.0, float(np.linalg.norm(pts[list(SHOULDERS)].mean(0) - pts[list(HIPS)].mean(0))))
    hip_width = float(np.linalg.norm(pts[23] - pts[24]))
    out: list[tuple[str, np.ndarray, float]] = []
    top_box = None
    if visible(*SHOULDERS):
        # Sleeves: halfway down each visible upper arm (a long sleeve hanging down stays inside anyway).
        sleeves = [(pts[s] + pts[e]) / 2 for s, e in zip(SHOULDERS, ELBOWS, strict=True) if visible(e)]
        top_box = extent(
            np.vstack([pts[list(SHOULDERS + HIPS)], *sleeves]), 0.15 * torso, 0.15 * torso, 0.05 * torso
        )
        out.append(("top", top_box, score(*SHOULDERS)))
    if visible(*HIPS, *KNEES):
        long = visible(*ANKLES)
        idx = [*HIPS, *KNEES, *(ANKLES if long else ())]
        mx = max(0.4 * hip_width, 0.15 * torso)
        bottom_box = extent(pts[idx], mx, 0.2 * torso, (0.05 if long else 0.12) * torso)
        out.append(("bottom", bottom_box, score(*idx)))
        if long and top_box is not None:
            full = np.concatenate(
                [np.minimum(top_box[:2], bottom_box[:2]), np.maximum(top_box[2:], bottom_box[2:])]
            )
            out.append(("full_body", full, score(*SHOULDERS, *HIPS, *KNEES, *ANKLES)))
    for foot in FEET:
        if visible(*foot):
            heel, toes = pts[foot[1]], pts[foot[2]]
            # The foot index landmark sits at the toes' base: reach on to the shoe's tip.
            shoe = np.vstack([pts[foot[0]], heel, toes, toes + 0.4 * (toes - heel)])
            m = max(0.2 * float(np.linalg.norm(toes - heel)), 0.08 * torso)
            out.append(("footwear", extent(shoe, m, m, m), score(*foot)))
    return out


def fit_to_mask(
    region: np.ndarray, category: str, mask_points: np.ndarray, min_points: int = 20
) -> np.ndarray | None:
    """Shrink a widened version of ``region`` (xyxy) to the mask points inside it; None if too few."""
    w, h = region[2] - region[0], region[3] - region[1]
    grow_x, grow_down = 0.1 * w, (0.2 * h if category == "footwear" else 0.0)
    x1, y1, x2, y2 = region[0] - grow_x, region[1], region[2] + grow_x, region[3] + grow_down
    xs, ys = mask_points[:, 0], mask_points[:, 1]
    inside = mask_points[(xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)]
    if len(inside) < min_points:
        return None
    return np.array([inside[:, 0].min(), inside[:, 1].min(), inside[:, 0].max(), inside[:, 1].max()])


class MediaPipePoseDetector(Detector):
    """Garment boxes from BlazePose landmarks or the person mask (see the module docstring)."""

    def __init__(
        self,
        name: str,
        model_dir: Path,
        *,
        box_source: Literal["keypoints", "mask"] = "keypoints",
        score_threshold: float = 0.3,
        max_people: int = 4,
        num_threads: int | None = None,
        min_visibility: float = 0.5,
        estimator: PoseEstimator | None = None,
    ) -> None:
        super().__init__(name)
        if box_source not in ("keypoints", "mask"):
            raise ModelConfigError(f"{name}: box_source must be 'keypoints' or 'mask', not {box_source!r}")
        if max_people < 1:
            raise ModelConfigError(f"{name}: max_people must be at least 1, not {max_people}")
        self.box_source = box_source
        self.score_threshold = float(score_threshold)
        self.min_visibility = float(min_visibility)
        self.estimator = estimator or PoseEstimator(model_dir, max_people=max_people, num_threads=num_threads)

    @property
    def model_dir(self) -> Path:
        return self.estimator.model_dir

    @property
    def max_people(self) -> int:
        return self.estimator.max_people

    def weights_present(self) -> bool:
        return self.estimator.weights_present()

    @property
    def runtime(self) -> str:
        return "litert"

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "model_dir": str(self.model_dir),
            "files": sorted(MODEL_FILES.values()),
            "box_source": self.box_source,
            "score_threshold": self.score_threshold,
            "max_people": self.max_people,
            "min_visibility": self.min_visibility,
            "weights_present": self.weights_present(),
        }

    def load(self) -> None:
        try:
            self.estimator.load()
        except ModelWeightsMissingError as exc:
            raise ModelWeightsMissingError(f"{self.name}: {exc}") from exc

    def estimate_poses(self, image: Image.Image) -> list[PoseEstimate]:
        self.load()
        return self.estimator.estimate_poses(image)

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        self.load()
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: Image.Image) -> list[Detection]:
        width, height = image.size
        detections: list[Detection] = []
        for pose in self.estimate_poses(image):
            mask_points = pose.mask_points() if self.box_source == "mask" else None
            for category, region, score in garment_regions(pose, self.min_visibility):
                if score < self.score_threshold:
                    continue
                box_xyxy = region if mask_points is None else fit_to_mask(region, category, mask_points)
                if box_xyxy is None or not np.all(np.isfinite(box_xyxy)):
                    continue
                box = Box(*(float(v) for v in box_xyxy)).clipped(width, height)
                if box.x2 - box.x1 < 1.0 or box.y2 - box.y1 < 1.0:
                    continue
                detections.append(Detection(box, min(1.0, max(0.0, score)), category, self.name))
        return detections
