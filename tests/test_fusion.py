"""Weighted Boxes Fusion: hand-computed results and malformed input."""

from __future__ import annotations

import math

import pytest

from clothes_search.settings import CategorySettings, ConfigError, FusionSettings, Settings
from ingestion.categories import CategoryVocabulary
from ingestion.detection import Box, Detection
from ingestion.errors import FusionError
from ingestion.fusion import fuse_detections
from ingestion.model_sets import ModelSet

VOCAB = CategoryVocabulary(CategorySettings())
SIZE = (100, 100)


def det(
    x1: float, y1: float, x2: float, y2: float, score: float, category: str = "top", name: str = "a"
) -> Detection:
    return Detection(Box(x1, y1, x2, y2), score, category, name)


def fuse(per_detector, weights=(1.0, 1.0), names=("a", "b"), **fusion):
    settings = FusionSettings(min_box_fraction=0.0, **fusion)
    return fuse_detections(per_detector, list(names), list(weights), SIZE, VOCAB, settings)


def test_two_agreeing_boxes_are_averaged_by_score():
    # x1 = (10*0.8 + 12*0.6) / 1.4, x2 = (50*0.8 + 52*0.6) / 1.4; conf = mean score = 0.7
    [fused] = fuse([[det(10, 10, 50, 50, 0.8)], [det(12, 10, 52, 50, 0.6, name="b")]])
    assert fused.box.x1 == pytest.approx(15.2 / 1.4)
    assert fused.box.x2 == pytest.approx(71.2 / 1.4)
    assert (fused.box.y1, fused.box.y2) == pytest.approx((10, 50))
    assert fused.score == pytest.approx(0.7)
    assert fused.detectors == ("a", "b")
    assert fused.category == "top"


def test_detector_weights_scale_scores_and_box_average():
    # scores become 0.8*2 = 1.6 and 0.6*1 = 0.6; x1 = (10*1.6 + 12*0.6) / 2.2
    # conf = (1.6 + 0.6) / 2 boxes, then * min(2 models, 2 boxes) / sum(weights)=3 -> 0.7333
    [fused] = fuse([[det(10, 10, 50, 50, 0.8)], [det(12, 10, 52, 50, 0.6, name="b")]], weights=(2.0, 1.0))
    assert fused.box.x1 == pytest.approx(23.2 / 2.2)
    assert fused.score == pytest.approx(1.1 * 2 / 3)


def test_a_box_only_one_detector_found_keeps_half_the_confidence():
    [fused] = fuse([[det(10, 10, 50, 50, 0.8)], []])
    assert fused.score == pytest.approx(0.4)
    assert fused.detectors == ("a",)
    assert fused.box.as_list() == [10.0, 10.0, 50.0, 50.0]


def test_different_groups_never_fuse_but_fine_and_coarse_labels_do():
    results = fuse(
        [[det(10, 10, 50, 50, 0.9, "top"), det(10, 40, 50, 90, 0.9, "trousers")]],
        weights=(1.0,),
        names=("a",),
    )
    assert sorted(r.category for r in results) == ["top", "trousers"]
    # a fine-grained 'trousers' and a heuristic 'bottom' agree; the fused box keeps the fine name
    [fused] = fuse([[det(10, 40, 50, 90, 0.5, "bottom")], [det(11, 41, 50, 90, 0.9, "trousers", "b")]])
    assert fused.category == "trousers"
    assert fused.detectors == ("a", "b")


def test_one_garment_under_two_class_hypotheses_gives_one_detection():
    # a dress and a top on the same box: different groups never fuse, so both survive WBF ...
    hypotheses = [
        [
            det(10, 10, 60, 90, 0.8, "short_sleeve_dress"),
            det(11, 10, 60, 88, 0.5, "top"),
            det(10, 10, 60, 90, 0.3, "long_sleeve_dress"),
        ]
    ]
    every = fuse(hypotheses, weights=(1.0,), names=("a",), same_garment_iou=1.0)
    # WBF fuses the two dresses (one group) into one box named by the first, the other its alternative,
    # scored on the fused box's scale: fused 0.55 = mean(0.8, 0.3); long_sleeve_dress 0.55 * 0.3 / 0.8
    dress, top = every
    assert (dress.category, top.category) == ("short_sleeve_dress", "top")
    assert dress.score == pytest.approx(0.55)
    assert dress.alternatives == (("long_sleeve_dress", pytest.approx(0.55 * 0.3 / 0.8)),)
    # ... and the class-agnostic step keeps the higher-scoring garment, the others as its alternatives
    [one] = fuse(hypotheses, weights=(1.0,), names=("a",), same_garment_iou=0.6)
    assert one.category == "short_sleeve_dress" and one.score == pytest.approx(0.55)
    assert one.alternatives == (("top", pytest.approx(0.5)), ("long_sleeve_dress", pytest.approx(0.20625)))
    assert one.box.as_list() == pytest.approx([10.0, 10.0, 60.0, 90.0])
    # a top over trousers (IoU 0.2) are two garments and stay two
    two = fuse(
        [[det(10, 10, 50, 50, 0.9, "top"), det(10, 40, 50, 90, 0.7, "trousers")]],
        weights=(1.0,),
        names=("a",),
        same_garment_iou=0.6,
    )
    assert [r.category for r in two] == ["top", "trousers"]


def test_boxes_far_apart_stay_separate_and_are_sorted_by_score():
    results = fuse([[det(0, 0, 20, 20, 0.5), det(60, 60, 90, 90, 0.9)], [det(60, 60, 90, 90, 0.9, name="b")]])
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert results[0].box.as_list() == [60.0, 60.0, 90.0, 90.0]
    assert results[0].detectors == ("a", "b")
    assert results[1].detectors == ("a",)


def test_nan_empty_and_outside_boxes_are_dropped_or_clipped():
    results = fuse(
        [
            [
                det(math.nan, 10, 50, 50, 0.9),  # NaN coordinate: dropped
                det(10, 10, 50, math.inf, 0.9),  # infinite: dropped
                det(10, 10, 10, 50, 0.9),  # zero width: dropped
                det(10, 10, 50, 50, math.nan),  # NaN score: dropped
                det(150, 150, 200, 200, 0.9),  # entirely outside the image: dropped
                det(-20, 60, 40, 130, 0.6, "bottom"),  # partly outside: clipped
            ]
        ],
        weights=(1.0,),
        names=("a",),
    )
    assert len(results) == 1
    assert results[0].box.as_list() == [0.0, 60.0, 40.0, 100.0]


def test_swapped_corners_mean_the_same_box():
    [fused] = fuse([[det(50, 50, 10, 10, 0.8)]], weights=(1.0,), names=("a",))
    assert fused.box.as_list() == [10.0, 10.0, 50.0, 50.0]


def test_no_detections_at_all_gives_nothing():
    assert fuse([[], []]) == []


@pytest.mark.parametrize(
    ("weights", "names", "message"),
    [
        ((0.0, 0.0), ("a", "b"), "positive"),
        ((1.0,), ("a", "b"), "1 fusion weights for 2 detectors"),
        ((1.0, -1.0), ("a", "b"), ">= 0"),
        ((1.0, math.nan), ("a", "b"), "finite"),
        ((1.0, 1.0), ("a", "a"), "unique"),
    ],
)
def test_bad_weights_raise_our_error_instead_of_exiting(weights, names, message):
    with pytest.raises(FusionError, match=message):
        fuse([[det(10, 10, 50, 50, 0.8)], [det(10, 10, 50, 50, 0.8)]], weights=weights, names=names)


def test_mismatched_lists_raise():
    with pytest.raises(FusionError, match="2 detection lists for 1 detectors"):
        fuse([[], []], weights=(1.0,), names=("a",))


def test_small_boxes_are_dropped_by_area_fraction():
    settings = FusionSettings(min_box_fraction=0.01)  # 1% of 100x100 = 100 px²
    tiny = det(0, 0, 9, 9, 0.9)  # 81 px²
    kept = det(20, 20, 40, 40, 0.9)
    results = fuse_detections([[tiny, kept]], ["a"], [1.0], SIZE, VOCAB, settings)
    assert [r.box.as_list() for r in results] == [[20.0, 20.0, 40.0, 40.0]]


def test_unknown_conf_type_is_a_config_error_not_an_exit():
    with pytest.raises(ConfigError, match="conf_type"):
        Settings.load(fusion={"conf_type": "median"})


def test_a_model_set_recorded_before_same_garment_iou_keeps_every_fused_box():
    settings = Settings()
    record = ModelSet.of(settings).to_dict()
    assert ModelSet.from_dict(record).fusion.same_garment_iou == settings.fusion.same_garment_iou == 0.6
    del record["fusion"]["same_garment_iou"]  # as index versions built before the setting stored it
    assert ModelSet.from_dict(record).fusion.same_garment_iou == 1.0
