"""``clothes-search train detector`` / ``eval-detector`` and the box AP they report.

The training tests run the real command (EfficientNet-Lite0 with its packaged ImageNet weights) on a
tiny generated sample set at a small image size; the AP tests check hand-computed values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from clothes_search.cli.context import CliContext
from clothes_search.cli.train_detector import eval_detector, train_detector
from clothes_search.evaluation.average_precision import (
    ScoredBox,
    TruthBox,
    average_precision,
    box_ap,
    detection_recall,
    ranked_hits,
)
from clothes_search.evaluation.deepfashion2 import read_split
from clothes_search.evaluation.detection import category_matcher, score_detections
from clothes_search.sample_data import build_sample_set
from clothes_search.settings import CategorySettings, DetectorConfig
from clothes_search.training.data import data_hash
from clothes_search.training.detector.augment import evaluation_transform
from clothes_search.training.detector.dataset import DetectionDataset, category_list, collate
from clothes_search.training.detector.train import DEFAULT_ARCH, batch_loss
from ingestion.categories import CategoryVocabulary
from ingestion.checkpoints import load_checkpoint, state_dict_of
from ingestion.detectors import build_detector as build_configured_detector
from ingestion.detectors.efficientnet_lite_detector import build_detector

IMAGE_SIZE = 128
STEPS_PER_EPOCH = 3  # the tiny train split's 12 images in batches of 4


# -- AP@0.5, by hand ----------------------------------------------------------------------------
A = (0.0, 0.0, 10.0, 10.0)
B = (20.0, 0.0, 30.0, 10.0)
FAR = (50.0, 50.0, 60.0, 60.0)


def truth(*boxes: tuple[float, float, float, float], category: str = "trousers") -> list[TruthBox]:
    return [TruthBox(box, category) for box in boxes]


def detected(box: tuple[float, float, float, float], score: float, category: str = "trousers") -> ScoredBox:
    return ScoredBox(box, score, category)


def test_ap_of_perfect_detections_is_one():
    truths = {"1": truth(A, B), "2": truth(A)}
    detections = {"1": [detected(A, 0.9), detected(B, 0.8)], "2": [detected(A, 0.7)]}
    assert box_ap(detections, truths, ["trousers"]) == {"trousers": 1.0}


def test_false_positive_ranked_above_the_only_true_positive_halves_ap():
    # ranks: FP (precision 0, recall 0), TP (precision 1/2, recall 1) -> AP = 1 * 1/2
    detections = {"1": [detected(FAR, 0.9), detected(A, 0.8)]}
    assert box_ap(detections, {"1": truth(A)}, ["trousers"])["trousers"] == pytest.approx(0.5)


def test_ap_integrates_the_precision_envelope_over_recall():
    # TP, FP, TP over 2 garments: recall 1/2 at precision 1, recall 1 at precision 2/3
    assert average_precision([True, False, True], 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # FP, TP, TP: the envelope lifts the precision at recall 1/2 to 2/3 -> AP = 2/3
    assert average_precision([False, True, True], 2) == pytest.approx(2 / 3)
    # a garment never found caps recall at 1/2
    assert average_precision([True], 2) == pytest.approx(0.5)
    assert average_precision([], 3) == 0.0


def test_duplicates_poor_boxes_and_other_categories_are_false_positives():
    shifted = (4.0, 0.0, 14.0, 10.0)  # IoU with A = 6 / 14 < 0.5
    detections = {
        "1": [
            detected(A, 0.9),
            detected(A, 0.8),  # a duplicate of the first
            detected(shifted, 0.7),
            detected(A, 0.95, category="skirt"),
        ]
    }
    assert ranked_hits(detections, {"1": truth(A)}, "trousers") == [True, False, False]
    assert box_ap(detections, {"1": truth(A)}, ["trousers", "skirt"]) == {"trousers": 1.0}


def test_a_detection_takes_the_best_garment_not_yet_taken():
    # two overlapping garments; the second detection's best match is already taken, so it takes the other
    left, right = (0.0, 0.0, 10.0, 10.0), (2.0, 0.0, 12.0, 10.0)  # IoU 8/12
    detections = {"1": [detected(left, 0.9), detected(left, 0.8)]}
    assert ranked_hits(detections, {"1": truth(left, right)}, "trousers") == [True, True]


def test_coarse_and_garment_names_count_for_the_fine_category():
    matches = category_matcher(CategorySettings().coarse)
    truths = {"1": [TruthBox(A, "long_sleeve_top"), TruthBox(B, "trousers")]}
    detections = {"1": [detected(A, 0.9, "top"), detected(FAR, 0.8, "garment"), detected(B, 0.7, "bottom")]}
    ap = box_ap(detections, truths, ["long_sleeve_top", "trousers"], matches=matches)
    # long sleeve top: "top" hits, then "garment" misses -> 1; trousers: "top" is no candidate,
    # "garment" misses first, then "bottom" hits -> 1/2
    assert ap == {"long_sleeve_top": 1.0, "trousers": pytest.approx(0.5)}
    assert detection_recall(detections, truths, matches=matches) == 1.0
    assert detection_recall(detections, truths, matches=matches, min_score=0.85) == 0.5


# -- training -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-set")
    build_sample_set(root, seed=1, validation_items=4, unseen_items=2, train_items=4)
    return root


def train(*args: str) -> str:
    result = CliRunner().invoke(train_detector, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def first_epoch(tiny_set, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("detector") / "epoch1.pt"
    output = train(
        *("--data", str(tiny_set), "--out", str(out), "--image-size", str(IMAGE_SIZE)),
        *("--epochs", "1", "--batch-size", "4", "--lr", "5e-3", "--warmup-steps", "0", "--no-eval"),
    )
    return out, output


@pytest.fixture(scope="module")
def resumed(tiny_set, first_epoch) -> tuple[Path, str]:
    out = first_epoch[0].with_name("epoch12.pt")
    output = train(
        *("--data", str(tiny_set), "--out", str(out), "--image-size", str(IMAGE_SIZE)),
        *("--epochs", "12", "--batch-size", "4", "--lr", "5e-3", "--warmup-steps", "0"),
        *("--resume", str(first_epoch[0])),
    )
    return out, output


def loss_on_first_images(checkpoint: Path, data: Path) -> float:
    """The training loss of a checkpoint's model on a fixed batch (4 training images, no augmentation)."""
    raw = load_checkpoint(checkpoint)
    model = build_detector(raw["arch"], len(raw["categories"]), raw["image_size"])
    model.load_state_dict(state_dict_of(raw))
    images = read_split(data / "train")
    dataset = DetectionDataset(images, raw["categories"][1:], raw["image_size"], evaluation_transform())
    batch, targets = collate([dataset[i] for i in range(4)])
    return batch_loss(model, batch, targets)


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_checkpoint_detects_through_the_backend(
    tiny_set, first_epoch, resumed, astronaut
):
    assert "epoch 1/1  loss" in first_epoch[1]
    before = loss_on_first_images(first_epoch[0], tiny_set)
    after = loss_on_first_images(resumed[0], tiny_set)
    assert after < 0.85 * before, (before, after)

    config = DetectorConfig(name="t", backend="torchvision", checkpoint=resumed[0], score_threshold=0.0)
    vocabulary = CategoryVocabulary(CategorySettings())
    detector = build_configured_detector(config, vocabulary, models_dir=tiny_set, device=torch.device("cpu"))
    [detections] = detector.detect([astronaut])
    assert detections
    categories = set(load_checkpoint(resumed[0])["categories"][1:])
    for detection in detections:
        assert 0 <= detection.box.x1 < detection.box.x2 <= astronaut.width
        assert 0 <= detection.box.y1 < detection.box.y2 <= astronaut.height
        assert 0 <= detection.score <= 1 and detection.category in categories and detection.detector == "t"


@pytest.mark.slow
def test_resume_continues_from_the_saved_epoch_step_and_optimiser(first_epoch, resumed):
    first, again = load_checkpoint(first_epoch[0]), load_checkpoint(resumed[0])
    assert (first["epoch"], first["step"]) == (1, STEPS_PER_EPOCH)
    assert f"epoch 1, step {STEPS_PER_EPOCH}" in resumed[1]
    assert "epoch 1/12" not in resumed[1] and "epoch 2/12" in resumed[1] and "epoch 12/12" in resumed[1]
    assert (again["epoch"], again["step"]) == (12, 12 * STEPS_PER_EPOCH)
    # the optimiser's moments carried over: AdamW counted every step of both runs
    assert all(int(s["step"]) == 12 * STEPS_PER_EPOCH for s in again["optimizer"]["state"].values())
    assert again["scheduler"]["last_epoch"] == 12 * STEPS_PER_EPOCH
    assert again["trained"]["seconds"] >= first["trained"]["seconds"]


@pytest.mark.slow
def test_checkpoint_records_arch_categories_data_and_validation_scores(tiny_set, resumed):
    raw = torch.load(resumed[0], map_location="cpu", weights_only=True)
    categories = category_list(read_split(tiny_set / "train"))
    assert raw["arch"] == DEFAULT_ARCH
    assert raw["categories"] == ["__background__", *categories]
    assert raw["image_size"] == IMAGE_SIZE
    assert raw["data_hash"] == data_hash(tiny_set / "train")
    assert raw["trained"]["steps"] == 12 * STEPS_PER_EPOCH and raw["trained"]["options"]["batch_size"] == 4
    metrics = raw["metrics"]
    assert set(metrics["ap50"]) == set(category_list(read_split(tiny_set / "validation")))
    assert all(0.0 <= ap <= 1.0 for ap in metrics["ap50"].values())
    assert "mAP@0.5" in resumed[1] and "recall@0.5" in resumed[1]


@pytest.mark.slow
def test_eval_detector_scores_the_configured_pipeline_and_a_checkpoint(tiny_set, resumed, tmp_path):
    config = tmp_path / "whole.toml"
    config.write_text('[[detectors]]\nname = "whole"\nbackend = "whole_image"\n')
    result = CliRunner().invoke(
        eval_detector,
        ["--data", str(tiny_set), "--checkpoint", str(resumed[0])],
        obj=CliContext(config_file=config),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("|  |"))
    assert header == "|  | whole | epoch12.pt |"
    assert "recall@0.5 consumer photos" in result.output


def test_scores_split_consumer_and_shop_images(tiny_set):
    annotations = read_split(tiny_set / "validation")
    perfect = {
        a.image_id: [ScoredBox(item.box, 1.0, item.category) for item in a.items if a.source == "shop"]
        for a in annotations
    }
    scores = score_detections(annotations, perfect, matches=category_matcher({}))
    assert scores.map50_by_source["shop"] == 1.0 and scores.recall50_by_source["shop"] == 1.0
    assert scores.map50_by_source["user"] == 0.0 and scores.recall50_by_source["user"] == 0.0
    assert scores.garments == sum(len(a.items) for a in annotations)


def test_bad_options_are_refused_before_any_work(tiny_set, tmp_path):
    out = tmp_path / "never.pt"
    result = CliRunner().invoke(
        train_detector, ["--data", str(tiny_set), "--out", str(out), "--image-size", "300"]
    )
    assert result.exit_code == 1 and "multiple of 32" in result.output
    assert not out.exists()


def test_a_mosaic_item_holds_four_images_boxes_inside_their_quadrants(tiny_set):
    images = read_split(tiny_set / "train")
    categories = category_list(images)
    plain = DetectionDataset(images, categories, 320, evaluation_transform())
    mosaic = DetectionDataset(images, categories, 320, evaluation_transform(), mosaic=1.0)
    torch.manual_seed(3)
    image, target = mosaic[0]
    assert image.shape == (3, 240, 320)
    boxes = target["boxes"]
    assert len(boxes) > len(plain[0][1]["boxes"])  # the first image's garments and the others'
    assert len(boxes) == len(target["labels"]) and set(target["labels"].tolist()) <= set(range(1, 6))
    # every box lies within one quadrant (160 x 120), never across the canvas's midlines
    for x1, y1, x2, y2 in boxes.tolist():
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        assert (x2 <= 160 or x1 >= 160) and (y2 <= 120 or y1 >= 120)
    refused = CliRunner().invoke(
        train_detector, ["--data", str(tiny_set), "--out", str(tiny_set / "x.pt"), "--mosaic", "1.5"]
    )
    assert refused.exit_code == 2 and "--mosaic" in refused.output
