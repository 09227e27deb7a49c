"""BlazePose person detection + landmarks with MediaPipe's .tflite models on ai-edge-litert.

Pre/post-processing (anchors, NMS, ROI, affine sampling) is in :mod:`ingestion.detectors.blazepose`.
One estimator can serve several :class:`MediaPipePoseDetector` instances (keypoint and mask
modes): results are remembered per image object.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ingestion.detectors import blazepose as bp
from ingestion.errors import ModelConfigError, ModelWeightsMissingError

FETCH_COMMAND = "clothes-search models fetch-mediapipe"
MODEL_FILES = {"detector": "pose_detection.tflite", "landmarks": "pose_landmark_full.tflite"}
# Images larger than this (long side) are box-filtered down before the models' point sampling.
MAX_SIDE = 1024
PRESENCE_THRESHOLD = 0.5  # ThresholdingCalculator in pose_landmark_by_roi_cpu.pbtxt
SAME_PERSON_IOU = 0.5


@dataclass(frozen=True, slots=True)
class PoseEstimate:
    """One person. ``points`` ``(33, 2)`` xy in the image's pixels, ``visibility`` ``(33,)``,
    ``presence`` in [0, 1]; ``segmentation`` ``(256, 256)`` logits over ``roi`` (pixels)."""

    points: np.ndarray
    visibility: np.ndarray
    presence: float
    roi: bp.RotatedRect
    segmentation: np.ndarray

    def mask_points(self) -> np.ndarray:
        """Image-pixel centres ``(M, 2)`` of the ROI's segmentation cells on the person."""
        rows, cols = np.nonzero(self.segmentation > 0.0)
        size = self.segmentation.shape[0]
        return self.roi.to_image(np.stack([cols, rows], axis=-1) / size)


class PoseEstimator:
    """Finds up to ``max_people`` people per image and their 33 landmarks (thread-safe)."""

    def __init__(
        self, model_dir: Path, *, max_people: int = 4, num_threads: int | None = None, memo_size: int = 256
    ) -> None:
        if max_people < 1:
            raise ModelConfigError(f"max_people must be at least 1, not {max_people}")
        self.model_dir = Path(model_dir)
        self.max_people = int(max_people)
        self.num_threads = num_threads
        self.memo_size = memo_size
        self._interpreters: dict[str, Any] | None = None
        self._anchors: np.ndarray | None = None
        self._lock = threading.Lock()
        self._memo: OrderedDict[int, tuple[weakref.ref[Image.Image], list[PoseEstimate]]] = OrderedDict()

    def _paths(self) -> dict[str, Path]:
        return {key: self.model_dir / file for key, file in MODEL_FILES.items()}

    def weights_present(self) -> bool:
        return all(path.is_file() for path in self._paths().values())

    def load(self) -> None:
        if self._interpreters is not None:
            return
        missing = [str(path) for path in self._paths().values() if not path.is_file()]
        if missing:
            raise ModelWeightsMissingError(
                f"MediaPipe pose model file(s) missing: {', '.join(missing)}. "
                f"Run `{FETCH_COMMAND}` to download them."
            )
        from ai_edge_litert.interpreter import Interpreter

        kwargs = {} if self.num_threads is None else {"num_threads": self.num_threads}
        interpreters = {}
        for key, path in self._paths().items():
            interpreter = Interpreter(model_path=str(path), **kwargs)
            interpreter.allocate_tensors()
            interpreters[key] = interpreter
        self._anchors = bp.ssd_anchors()
        self._interpreters = interpreters

    def _run(self, key: str, tensor: np.ndarray) -> dict[str, np.ndarray]:
        assert self._interpreters is not None
        interpreter = self._interpreters[key]
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[None].astype(np.float32))
        interpreter.invoke()
        return {o["name"]: interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()}

    def _find_rois(self, pixels: np.ndarray) -> list[bp.RotatedRect]:
        """Pose-detector ROIs, best first, in the pixels of ``pixels`` (H, W, 3 uint8)."""
        assert self._anchors is not None
        letterbox = bp.letterbox_rect(pixels.shape[1], pixels.shape[0])
        tensor = bp.warp_rect(pixels, letterbox, bp.DETECTION_INPUT_SIZE, "zero") / 127.5 - 1.0
        out = self._run("detector", tensor)
        boxes, keypoints, scores = bp.decode_detections(
            out["Identity"][0], out["Identity_1"][0], self._anchors
        )
        kept = bp.weighted_nms(boxes, keypoints, scores)[: self.max_people]
        return [bp.detection_to_roi(letterbox.to_image(kps)) for _, kps, _ in kept]

    def _landmarks(self, pixels: np.ndarray, roi: bp.RotatedRect) -> PoseEstimate | None:
        size = bp.LANDMARK_INPUT_SIZE
        out = self._run("landmarks", bp.warp_rect(pixels, roi, size, "replicate") / 255.0)
        presence = float(out["Identity_1"].reshape(-1)[0])
        if not 0.0 <= presence <= 1.0:
            presence = float(bp.sigmoid(presence))
        if presence < PRESENCE_THRESHOLD:
            return None
        raw = out["Identity"].reshape(bp.NUM_LANDMARKS, 5)
        norm = bp.refine_from_heatmap(raw[:, :2] / size, out["Identity_3"][0])
        return PoseEstimate(
            points=roi.to_image(norm[:33]),
            visibility=bp.sigmoid(raw[:33, 3]),
            presence=presence,
            roi=roi,
            segmentation=out["Identity_2"][0, :, :, 0],
        )

    def estimate_poses(self, image: Image.Image) -> list[PoseEstimate]:
        """The people in ``image`` (RGB), at most ``max_people``, landmarks in its pixels.

        The last ``memo_size`` results are remembered per image object (weakly), so the
        keypoint and mask detectors of one pipeline run the models once per image.
        """
        remembered = self._memo.get(id(image))
        if remembered is not None and remembered[0]() is image:
            return remembered[1]
        poses = self._estimate(image)
        with self._lock:
            self._memo[id(image)] = (weakref.ref(image), poses)
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
        return poses

    def _estimate(self, image: Image.Image) -> list[PoseEstimate]:
        self.load()
        factor = max(1, -(-max(image.size) // MAX_SIDE))
        small = image if image.mode == "RGB" else image.convert("RGB")
        if factor > 1:
            small = small.reduce(factor)
        pixels = np.asarray(small.convert("RGBA"))  # RGBA: warp_rect's fast path
        poses: list[PoseEstimate] = []
        with self._lock:
            for roi in self._find_rois(pixels):
                pose = self._landmarks(pixels, roi)
                if pose is None or any(_same_person(pose, other) for other in poses):
                    continue
                poses.append(pose)
        if factor == 1:
            return poses
        return [
            PoseEstimate(p.points * factor, p.visibility, p.presence, p.roi.scaled(factor), p.segmentation)
            for p in poses
        ]


def _same_person(a: PoseEstimate, b: PoseEstimate) -> bool:
    """Whether two estimates' landmark boxes overlap enough to be one person found twice."""
    boxes = [np.concatenate([p.points.min(0), p.points.max(0)]) for p in (a, b)]
    return float(bp.box_iou(boxes[0], boxes[1][None])[0]) > SAME_PERSON_IOU
