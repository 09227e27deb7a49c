"""BlazePose pre- and post-processing in numpy, ported from MediaPipe's pose graphs.

Runs MediaPipe's own ``pose_detection.tflite`` / ``pose_landmark_full.tflite`` without the
``mediapipe`` package. Each helper mirrors one calculator of MediaPipe 0.10
(``pose_detection_cpu.pbtxt``, ``pose_detection_to_roi.pbtxt``, ``pose_landmark_by_roi_cpu.pbtxt``):

* :func:`ssd_anchors` - ``SsdAnchorsCalculator`` (fixed anchor size, so only centres matter).
* :func:`decode_detections` - ``TensorsToDetectionsCalculator`` (reverse output order, scale 224).
* :func:`weighted_nms` - ``NonMaxSuppressionCalculator`` (WEIGHTED, IoU).
* :func:`detection_to_roi` - ``AlignmentPointsRectsCalculator`` + ``RectTransformationCalculator``.
* :func:`warp_rect` - ``ImageToTensorCalculator`` (OpenCV ``warpPerspective``, bilinear).
* :func:`refine_from_heatmap` - ``RefineLandmarksFromHeatmapCalculator``.
* :meth:`RotatedRect.to_image` - ``LandmarkProjectionCalculator`` / letterbox removal.

Coordinate conventions: image pixels are ``(x, y)`` with ``y`` pointing down and pixel ``i``
centred on the integer ``i`` (OpenCV's convention), so an image spans ``[0, width] x [0, height]``
in corner coordinates. "Normalised" coordinates are relative to a :class:`RotatedRect`: ``(0, 0)``
is its first corner and ``(1, 1)`` the opposite one, in its own rotated frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

# pose_detection_cpu.pbtxt
DETECTION_INPUT_SIZE = 224
DETECTION_STRIDES = (8, 16, 32, 32, 32)
DETECTION_MIN_SCORE = 0.5
DETECTION_SCORE_CLIP = 100.0
NMS_IOU_THRESHOLD = 0.3
NUM_DETECTION_KEYPOINTS = 4
# pose_detection_to_roi.pbtxt: keypoint 0 = hip centre, 1 = full-body scale/rotation point.
ROI_SCALE = 1.25
ROI_TARGET_ANGLE = math.pi / 2
# pose_landmark_by_roi_cpu.pbtxt
LANDMARK_INPUT_SIZE = 256
NUM_LANDMARKS = 39  # 33 pose landmarks + 6 auxiliary ones
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONFIDENCE = 0.5


@dataclass(frozen=True, slots=True)
class RotatedRect:
    """A rotated rectangle in image pixels (MediaPipe's ``NormalizedRect``, scaled to pixels).

    The normalised point ``(u, v)`` of the rectangle lies at
    ``centre + R(rotation) @ ((u - 0.5) * width, (v - 0.5) * height)``, ``R`` being the
    counter-clockwise rotation matrix in y-down coordinates, i.e. a clockwise turn on screen.
    """

    cx: float
    cy: float
    width: float
    height: float
    rotation: float = 0.0

    def scaled(self, factor: float) -> RotatedRect:
        """The same rectangle in an image ``factor`` times larger."""
        return RotatedRect(
            self.cx * factor, self.cy * factor, self.width * factor, self.height * factor, self.rotation
        )

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map normalised points ``(..., 2)`` of the rectangle to image pixels ``(..., 2)``."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        dx = (points[..., 0] - 0.5) * self.width
        dy = (points[..., 1] - 0.5) * self.height
        return np.stack([c * dx - s * dy + self.cx, s * dx + c * dy + self.cy], axis=-1)

    def to_normalised(self, points: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_image`: image pixels ``(..., 2)`` to normalised rectangle points."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        dx, dy = points[..., 0] - self.cx, points[..., 1] - self.cy
        u = (c * dx + s * dy) / self.width + 0.5
        v = (-s * dx + c * dy) / self.height + 0.5
        return np.stack([u, v], axis=-1)


def letterbox_rect(width: int, height: int) -> RotatedRect:
    """The square around a ``width`` x ``height`` image that ``keep_aspect_ratio`` letterboxes into."""
    side = float(max(width, height))
    return RotatedRect(width / 2.0, height / 2.0, side, side, 0.0)


def ssd_anchors(
    input_size: int = DETECTION_INPUT_SIZE,
    strides: tuple[int, ...] = DETECTION_STRIDES,
    anchor_offset: float = 0.5,
    anchors_per_layer: int = 2,
) -> np.ndarray:
    """Anchor centres ``(N, 2)`` as ``(x, y)`` normalised to the square detector input.

    Consecutive layers with the same stride share one feature map; each layer contributes
    ``anchors_per_layer`` anchors per cell (aspect ratio 1 plus the interpolated scale). With
    ``fixed_anchor_size`` every anchor is 1 x 1, so only the centres are returned.
    """
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = anchors_per_layer * (last - layer)
        cells = math.ceil(input_size / strides[layer])
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + anchor_offset) / cells, (ys + anchor_offset) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, computed without overflow warnings."""
    return 0.5 * (np.tanh(0.5 * np.asarray(x, dtype=np.float64)) + 1.0)


def decode_detections(
    raw_boxes: np.ndarray,
    raw_scores: np.ndarray,
    anchors: np.ndarray,
    scale: float = DETECTION_INPUT_SIZE,
    min_score: float = DETECTION_MIN_SCORE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the SSD regressors ``(N, 4 + 2K)`` and logits ``(N,)`` against ``anchors`` ``(N, 2)``.

    Returns ``boxes`` ``(M, 4)`` xyxy, ``keypoints`` ``(M, K, 2)`` xy, both normalised to the
    detector input, and ``scores`` ``(M,)``: only detections scoring at least ``min_score``
    (sigmoid of the clipped logit) with a non-empty box are kept.
    """
    raw_boxes = raw_boxes.reshape(len(anchors), -1).astype(np.float64)
    logits = np.clip(raw_scores.reshape(-1), -DETECTION_SCORE_CLIP, DETECTION_SCORE_CLIP)
    scores = sigmoid(logits)
    centre = raw_boxes[:, 0:2] / scale + anchors
    size = raw_boxes[:, 2:4] / scale
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    keypoints = raw_boxes[:, 4:].reshape(len(anchors), -1, 2) / scale + anchors[:, None, :]
    keep = (scores >= min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], keypoints[keep], scores[keep]


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``box`` ``(4,)`` with each of ``boxes`` ``(N, 4)``."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU_THRESHOLD
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression, best first.

    Each kept detection is the score-weighted mean (box and keypoints) of every remaining
    detection whose IoU with the current best exceeds ``iou_threshold`` (the best included), and
    keeps the best one's score. Returns ``(box (4,), keypoints (K, 2), score)`` tuples in the
    coordinates given.
    """
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out: list[tuple[np.ndarray, np.ndarray, float]] = []
    while remaining.size:
        best = remaining[0]
        overlap = box_iou(boxes[best], boxes[remaining]) > iou_threshold
        members = remaining[overlap]
        weights = scores[members][:, None]
        total = float(weights.sum())
        if members.size and total > 0:
            box = (boxes[members] * weights).sum(axis=0) / total
            kps = (keypoints[members] * weights[:, :, None]).sum(axis=0) / total
        else:
            box, kps = boxes[best], keypoints[best]
        out.append((box, kps, float(scores[best])))
        remaining = remaining[~overlap]
    return out


def normalize_radians(angle: float) -> float:
    """Wrap ``angle`` into ``[-pi, pi)``."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def detection_to_roi(keypoints_px: np.ndarray, scale: float = ROI_SCALE) -> RotatedRect:
    """The landmark model's square ROI from a detection's keypoints ``(K, 2)`` in image pixels.

    Centre at keypoint 0 (hip centre); side twice the distance to keypoint 1, times ``scale``;
    rotated so that keypoint 0 -> 1 points up (target angle 90 degrees).
    """
    (x0, y0), (x1, y1) = keypoints_px[0], keypoints_px[1]
    side = 2.0 * math.hypot(x1 - x0, y1 - y0) * scale
    rotation = normalize_radians(ROI_TARGET_ANGLE - math.atan2(-(y1 - y0), x1 - x0))
    return RotatedRect(float(x0), float(y0), side, side, rotation)


def warp_rect(
    image: np.ndarray, rect: RotatedRect, size: int, border: Literal["zero", "replicate"]
) -> np.ndarray:
    """Sample ``rect`` of an RGB or RGBA uint8 image ``(H, W, 3|4)`` into a ``(size, size, 3)`` RGB array.

    Output pixel ``(i, j)`` (column, row) samples the normalised point ``(i / size, j / size)``
    bilinearly, as OpenCV's ``warpPerspective`` does for MediaPipe's corner-to-corner mapping,
    with its exact 8-bit fixed-point arithmetic: source positions snap to 1/32 pixel and results
    round to integers (this brings the landmarks within a pixel of MediaPipe's). Samples outside
    the image are 0 (``"zero"``) or the nearest edge pixel (``"replicate"``). Values are float32
    in 0..255. RGBA input is faster (pixels are gathered as packed 32-bit words).
    """
    if image.shape[2] != 4 or image.dtype != np.uint8 or not image.flags.c_contiguous:
        rgba = np.zeros((*image.shape[:2], 4), dtype=np.uint8)
        rgba[..., :3] = image[..., :3]
        image = rgba
    height, width = image.shape[:2]
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    grid = np.arange(size, dtype=np.float64) / size - 0.5
    gu, gv = grid * rect.width, grid * rect.height
    # Source position of output pixel (row j, column i), in 1/32 pixel units.
    qx = np.rint(((c * gu)[None, :] - (s * gv)[:, None] + rect.cx) * 32.0).astype(np.int32)
    qy = np.rint(((s * gu)[None, :] + (c * gv)[:, None] + rect.cy) * 32.0).astype(np.int32)
    x0, y0 = qx >> 5, qy >> 5
    wx1, wy1 = qx & 31, qy & 31
    wx0, wy0 = 32 - wx1, 32 - wy1
    x1, y1 = x0 + 1, y0 + 1
    if border == "zero":
        wx0 *= (x0 >= 0) & (x0 < width)
        wx1 *= (x1 >= 0) & (x1 < width)
        wy0 *= (y0 >= 0) & (y0 < height)
        wy1 *= (y1 >= 0) & (y1 < height)
    for cols in (x0, x1):
        np.clip(cols, 0, width - 1, out=cols)
    for rows in (y0, y1):
        np.clip(rows, 0, height - 1, out=rows)
        rows *= width
    packed = image.view(np.uint32).reshape(-1)

    def taps(index: np.ndarray) -> np.ndarray:
        return np.take(packed, index).view(np.uint8).reshape(size, size, 4)

    # Separable form of OpenCV's sum of w_x * w_y * pixel over the 4 taps (exact in integers).
    top = taps(y0 + x0) * wx0[..., None]
    top += taps(y0 + x1) * wx1[..., None]
    bottom = taps(y1 + x0) * wx0[..., None]
    bottom += taps(y1 + x1) * wx1[..., None]
    out = top * wy0[..., None]
    out += bottom * wy1[..., None]
    out += 512
    out >>= 10
    return out[..., :3].astype(np.float32)


def refine_from_heatmap(
    landmarks: np.ndarray,
    heatmap: np.ndarray,
    kernel_size: int = HEATMAP_KERNEL,
    min_confidence: float = HEATMAP_MIN_CONFIDENCE,
) -> np.ndarray:
    """Refine normalised landmark ``(x, y)`` ``(N, 2)`` with heatmap logits ``(h, w, N)``.

    Each landmark inside the heatmap moves to the sigmoid-weighted mean cell position of the
    ``kernel_size`` window around it, when that window's peak confidence reaches
    ``min_confidence``. Returns a new ``(N, 2)`` array in the same normalised coordinates.
    """
    hm_h, hm_w, _ = heatmap.shape
    offset = (kernel_size - 1) // 2
    out = landmarks.astype(np.float64).copy()
    for k in range(len(landmarks)):
        col, row = int(landmarks[k, 0] * hm_w), int(landmarks[k, 1] * hm_h)  # truncation, as in C++
        if col < 0 or col >= hm_w or row < 0 or row >= hm_h:
            continue
        r0, r1 = max(0, row - offset), min(hm_h, row + offset + 1)
        c0, c1 = max(0, col - offset), min(hm_w, col + offset + 1)
        conf = sigmoid(heatmap[r0:r1, c0:c1, k])
        total = conf.sum()
        if conf.max() >= min_confidence and total > 0:
            rows, cols = np.mgrid[r0:r1, c0:c1]
            out[k, 0] = (cols * conf).sum() / hm_w / total
            out[k, 1] = (rows * conf).sum() / hm_h / total
    return out
