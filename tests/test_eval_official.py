"""The challenge's own rules (deepfashion2_retrieval_test.py) where they differ from our lenient ones,
hand-computed, and the files its script reads."""

from __future__ import annotations

from test_eval_protocol import BOX, ELSEWHERE, GALLERY, MATCH, SHOP, crop, detection, garment, image

from clothes_search.evaluation.official import (
    class_id,
    evaluate_official,
    gallery_gt_rows,
    query_gt_rows,
    results_rows,
)
from clothes_search.evaluation.protocol import evaluate
from clothes_search.evaluation.runner import hypotheses
from ingestion.detection import Box, FusedDetection

HALF = (50.0, 0.0, 150.0, 100.0)  # IoU 1/3 with BOX


def both(queries, detections, gallery=GALLERY):
    return (
        evaluate_official(queries, detections, gallery),
        evaluate(queries, detections, gallery, category_match=MATCH),
    )


def test_a_coarse_top_detection_on_a_short_sleeve_top_counts_only_under_the_lenient_rule():
    query = image("q1", "user", 7, garment("item1", "short_sleeve_top", BOX, 1))
    shop = image("g1", "shop", 7, garment("item1", "short_sleeve_top", BOX, 1))
    found = {"q1": [detection(BOX, "top", 0.9, crop("g1"))]}
    official, lenient = both([query], found, {"g1": shop})
    assert lenient.topk_accuracy[1] == 1.0 and lenient.detection_recall_at_50 == 1.0
    assert official.topk_accuracy[1] == 0.0 and official.detected_items == 0
    assert official.detection_recall_at_50 == 0.0  # not the garment's exact class


def test_one_detection_over_two_garments_goes_to_the_one_it_overlaps_most_whatever_its_class():
    # the trousers detection overlaps the skirt (IoU 1) more than the trousers (IoU 1/3)
    query = image("q1", "user", 7, garment("item1", "skirt", BOX, 0), garment("item2", "trousers", HALF, 1))
    shop = image("g1", "shop", 7, garment("item1", "trousers", BOX, 1))
    found = {"q1": [detection(BOX, "trousers", 0.9, crop("g1"))]}
    official, lenient = both([query], found, {"g1": shop})
    assert lenient.detected_items == 1 and lenient.topk_accuracy[1] == 1.0  # same category first
    assert official.detected_items == 0 and official.topk_accuracy[1] == 0.0  # assigned to the skirt


def test_a_detection_overlapping_nothing_stands_for_the_first_garment_under_the_official_rule():
    # np.argmax over all-zero IoUs is 0: the challenge's script gives it to item1
    found = {"q1": [detection(ELSEWHERE, "trousers", 0.9, crop("g1"))]}
    query = image("q1", "user", 7, garment("item1", "trousers", BOX, 1))
    official, lenient = both([query], found)
    assert lenient.detected_items == 0 and lenient.topk_accuracy[1] == 0.0
    assert official.detected_items == 1 and official.topk_accuracy[1] == 1.0
    assert official.detection_recall_at_50 == 0.0  # it does not find the garment, though


def test_the_highest_scoring_detection_of_the_exact_class_stands_and_ties_keep_the_first():
    query = image("q1", "user", 7, garment("item1", "trousers", BOX, 1))
    found = {
        "q1": [
            detection(BOX, "trousers", 0.5, crop("x1")),  # wrong product
            detection(BOX, "shorts", 0.99, crop("g1")),  # right product, other class
            detection(BOX, "trousers", 0.8, crop("g1")),
            detection(BOX, "trousers", 0.8, crop("x1")),  # same score, later: not chosen
        ]
    }
    official = evaluate_official([query], found, GALLERY)
    assert official.topk_accuracy[1] == 1.0 and official.items[0].detection_iou == 1.0


def test_the_challenges_files_have_its_fields_and_twenty_gallery_entries():
    query = image(
        "000007", "user", 7, garment("item1", "trousers", BOX, 1), garment("item2", "skirt", HALF, 0)
    )
    rows = results_rows({"000007": [detection(BOX, "trousers", 0.75, crop("g1"), crop("x1")),
                                    detection(BOX, "top", 0.5)]})  # fmt: skip
    assert len(rows) == 1  # a detection that retrieved nothing is not a result
    [row] = rows
    assert row["query_image_id"] == 7 and row["query_cls"] == class_id("trousers") == 8
    assert len(row["gallery_image_id"]) == len(row["gallery_bbox"]) == 20
    assert row["gallery_image_id"][:3] == ["g1", "x1", "x1"]  # padded with the last one
    assert query_gt_rows([query]) == [
        {"query_image_id": 7, "bbox": list(BOX), "cls": 8, "style": 1, "pair_id": 7},
        {"query_image_id": 7, "bbox": list(HALF), "cls": 9, "style": 0, "pair_id": 7},
    ]
    assert gallery_gt_rows({"g1": SHOP}) == [
        {"gallery_image_id": "g1", "bbox": list(BOX), "style": 1, "pair_id": 7}
    ]
    assert class_id("top") == class_id("garment") == 0


def test_a_garments_alternative_class_is_a_detection_of_its_own_under_both_rules():
    """A coat the detector called a pullover first and a coat second: one garment in /similar, two
    hypotheses in the protocol, and the coat hypothesis is the one that counts."""
    query = image("q1", "user", 7, garment("item1", "long_sleeve_outwear", BOX, 1))
    shop = image("g1", "shop", 7, garment("item1", "long_sleeve_outwear", BOX, 1))
    coat = FusedDetection(
        box=Box(*BOX),
        score=0.5,
        category="long_sleeve_top",
        detectors=("df2",),
        alternatives=(("long_sleeve_outwear", 0.4),),
    )
    results = (crop("g1"),)
    found = {"q1": hypotheses(coat, results)}
    assert [(d.category, d.score) for d in found["q1"]] == [
        ("long_sleeve_top", 0.5),
        ("long_sleeve_outwear", 0.4),
    ]
    assert all(d.box == BOX and d.results == results for d in found["q1"])
    official, lenient = both([query], found, {"g1": shop})
    assert official.detected_items == 1 and official.topk_accuracy[1] == 1.0
    assert lenient.detected_items == 1 and lenient.topk_accuracy[1] == 1.0
    # without the alternative the coat is missed under the challenge's rules
    alone = evaluate_official([query], {"q1": found["q1"][:1]}, {"g1": shop})
    assert alone.detected_items == 0 and alone.topk_accuracy[1] == 0.0
