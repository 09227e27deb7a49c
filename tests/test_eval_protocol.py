"""The DeepFashion2 clothes-retrieval protocol: reader, hand-computed scores, report writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clothes_search.evaluation.deepfashion2 import (
    CATEGORY_NAMES,
    DatasetFormatError,
    GarmentAnnotation,
    ImageAnnotation,
    category_key,
    read_split,
)
from clothes_search.evaluation.protocol import (
    EvaluationInputError,
    QueryDetection,
    RetrievalScores,
    RetrievedCrop,
    default_category_match,
    evaluate,
    iou,
)
from clothes_search.evaluation.report import ConfigResult, markdown_table, plot_topk, read_json, write_json
from clothes_search.settings import CategorySettings

MATCH = default_category_match(CategorySettings().coarse)
BOX = (0.0, 0.0, 100.0, 100.0)
ELSEWHERE = (500.0, 500.0, 600.0, 600.0)


def garment(key: str, category: str, box, style: int) -> GarmentAnnotation:
    category_id = [name.replace(" ", "_") for name in CATEGORY_NAMES].index(category) + 1
    return GarmentAnnotation(key, category_id, category, tuple(float(v) for v in box), style)


def image(image_id: str, source: str, pair_id: int, *items: GarmentAnnotation) -> ImageAnnotation:
    return ImageAnnotation(image_id, Path(f"/split/image/{image_id}.jpg"), source, pair_id, items)


def detection(box, category: str, score: float, *results: RetrievedCrop) -> QueryDetection:
    return QueryDetection(tuple(float(v) for v in box), category, score, results)


def crop(gallery_image_id: str, box=BOX) -> RetrievedCrop:
    return RetrievedCrop(gallery_image_id, tuple(float(v) for v in box))


def gallery_of(*images: ImageAnnotation) -> dict[str, ImageAnnotation]:
    return {img.image_id: img for img in images}


# pair 7: one query garment (trousers, style 1) and its shop photo; pair 8 is another product
QUERY = image("q1", "user", 7, garment("item1", "trousers", BOX, 1))
SHOP = image("g1", "shop", 7, garment("item1", "trousers", BOX, 1))
OTHER = image("x1", "shop", 8, garment("item1", "trousers", BOX, 1))
GALLERY = gallery_of(SHOP, OTHER)


def run(queries, detections, gallery=GALLERY, **kwargs) -> RetrievalScores:
    return evaluate(queries, detections, gallery, category_match=MATCH, **kwargs)


# ---------------------------------------------------------------- reader


def _write_split(root: Path, annotations: dict[str, object], images: tuple[str, ...]) -> Path:
    (root / "annos").mkdir(parents=True)
    (root / "image").mkdir()
    for image_id, content in annotations.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (root / "annos" / f"{image_id}.json").write_text(text)
    for image_id in images:
        Image.new("RGB", (32, 24), (200, 30, 30)).save(root / "image" / f"{image_id}.jpg")
    return root


def _real_item(category_id: int, box: list[float], style: int) -> dict[str, object]:
    """An item as real DeepFashion2 files have it, with the keys the reader ignores."""
    return {
        "segmentation": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]],
        "scale": 2,
        "viewpoint": 2,
        "zoom_in": 1,
        "landmarks": [0, 0, 0, 10, 12, 2],
        "style": style,
        "bounding_box": box,
        "category_id": category_id,
        "occlusion": 1,
        "category_name": CATEGORY_NAMES[category_id - 1],
    }


def test_read_split_parses_items_in_numeric_order_and_ignores_extra_keys(tmp_path):
    user = {
        "source": "user",
        "pair_id": 3,
        "item10": _real_item(13, [5, 6, 7, 8], 0),
        "item2": _real_item(8, [1, 2, 30, 40], 2),
        "item1": _real_item(1, [0, 0, 10, 20], 1),
    }
    shop = {"source": "shop", "pair_id": 3, "item1": _real_item(1, [2, 2, 12, 22], 1)}
    root = _write_split(tmp_path / "validation", {"000002": shop, "000001": user}, ("000001", "000002"))

    images = read_split(root)

    assert [img.image_id for img in images] == ["000001", "000002"]
    first = images[0]
    assert first.source == "user"
    assert first.pair_id == 3
    assert first.image_path == root / "image" / "000001.jpg"
    assert [item.key for item in first.items] == ["item1", "item2", "item10"]
    assert first.items[0] == GarmentAnnotation("item1", 1, "short_sleeve_top", (0.0, 0.0, 10.0, 20.0), 1)
    assert first.items[1] == GarmentAnnotation("item2", 8, "trousers", (1.0, 2.0, 30.0, 40.0), 2)
    assert first.items[2] == GarmentAnnotation("item10", 13, "sling_dress", (5.0, 6.0, 7.0, 8.0), 0)
    assert images[1].source == "shop"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"source": "user", "pair_id": 1,', "cannot read the JSON"),
        ({"source": "consumer", "pair_id": 1}, "source must be 'user' or 'shop'"),
        ({"source": "user", "pair_id": "1"}, "pair_id must be an integer"),
        ({"source": "user", "pair_id": 1, "item1": _real_item(1, [0, 0, 1], 1)}, "item1.bounding_box"),
        ({"source": "user", "pair_id": 1, "item1": _real_item(1, [9, 0, 1, 5], 1)}, "x1 <= x2"),
        (
            {"source": "user", "pair_id": 1, "item1": {**_real_item(1, [0, 0, 1, 1], 1), "style": "a"}},
            "style",
        ),
        (
            {"source": "user", "pair_id": 1, "item1": {**_real_item(1, [0, 0, 1, 1], 1), "category_id": 14}},
            "1..13",
        ),
        (
            {
                "source": "user",
                "pair_id": 1,
                "item1": {**_real_item(1, [0, 0, 1, 1], 1), "category_name": "vest"},
            },
            "does not match category_id 1",
        ),
    ],
)
def test_read_split_names_the_bad_file_and_the_reason(tmp_path, content, reason):
    good = {"source": "shop", "pair_id": 1, "item1": _real_item(1, [0, 0, 1, 1], 1)}
    root = _write_split(tmp_path / "split", {"000001": good, "000002": content}, ("000001", "000002"))

    with pytest.raises(DatasetFormatError) as caught:
        read_split(root)

    assert str(root / "annos" / "000002.json") in str(caught.value)
    assert reason in str(caught.value)


def test_read_split_reports_a_missing_image(tmp_path):
    good = {"source": "shop", "pair_id": 1, "item1": _real_item(1, [0, 0, 1, 1], 1)}
    root = _write_split(tmp_path / "split", {"000001": good}, ())

    with pytest.raises(DatasetFormatError, match=r"000001\.json: its image .*000001\.jpg is missing"):
        read_split(root)


def test_read_split_reports_a_missing_folder(tmp_path):
    (tmp_path / "split" / "annos").mkdir(parents=True)

    with pytest.raises(DatasetFormatError, match=r"split/image: folder is missing"):
        read_split(tmp_path / "split")


def test_category_key_maps_ids_to_our_vocabulary():
    assert len(CATEGORY_NAMES) == 13
    assert category_key(1) == "short_sleeve_top"
    assert category_key(8) == "trousers"
    assert category_key(13) == "sling_dress"
    assert [category_key(i) for i in range(1, 14)] == CategorySettings().vocabulary[:13]
    with pytest.raises(ValueError, match=r"1\.\.13"):
        category_key(0)


# ---------------------------------------------------------------- protocol


def test_iou_of_hand_computed_boxes():
    assert iou(BOX, BOX) == 1.0
    assert iou(BOX, ELSEWHERE) == 0.0
    assert iou(BOX, (50, 0, 150, 100)) == pytest.approx(5000 / 15000)
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_default_category_match():
    assert MATCH("trousers", "trousers")
    assert MATCH("bottom", "trousers")
    assert MATCH("full_body", "sling_dress")
    assert MATCH("garment", "skirt")
    assert not MATCH("top", "trousers")
    assert not MATCH("long_sleeve_top", "short_sleeve_top")
    assert not MATCH("trousers", "bottom")


def test_a_correct_retrieval_scores_one():
    scores = run([QUERY], {"q1": [detection(BOX, "trousers", 0.9, crop("g1"))]})

    assert scores.query_items == 1
    assert scores.detected_items == 1
    assert scores.topk_accuracy == {1: 1.0, 5: 1.0, 10: 1.0, 15: 1.0, 20: 1.0}
    assert scores.map_at_20 == 1.0
    [item] = scores.items
    assert (item.image_id, item.item_key, item.pair_id, item.style, item.category) == (
        "q1",
        "item1",
        7,
        1,
        "trousers",
    )
    assert (item.detected, item.detection_iou, item.first_correct_rank) == (True, 1.0, 1)


def test_a_category_mismatched_detection_is_not_assigned_and_the_item_is_missed():
    scores = run([QUERY], {"q1": [detection(BOX, "short_sleeve_top", 0.9, crop("g1"))]})

    assert scores.query_items == 1
    assert scores.detected_items == 0
    assert scores.topk_accuracy[20] == 0.0
    assert scores.map_at_20 == 0.0
    assert scores.detection_recall_at_50 == 0.0
    [item] = scores.items
    assert (item.detected, item.detection_iou, item.first_correct_rank, item.average_precision) == (
        False,
        None,
        None,
        0.0,
    )


def test_missed_query_items_stay_in_the_denominator():
    two_items = image(
        "q1",
        "user",
        7,
        garment("item1", "trousers", BOX, 1),
        garment("item2", "short_sleeve_top", ELSEWHERE, 2),
    )
    undetected_image = image("q2", "user", 9, garment("item1", "skirt", BOX, 1))

    scores = run([two_items, undetected_image], {"q1": [detection(BOX, "trousers", 0.9, crop("g1"))]})

    assert scores.query_items == 3
    assert scores.detected_items == 1
    assert scores.topk_accuracy[1] == pytest.approx(1 / 3)
    assert scores.map_at_20 == pytest.approx(1 / 3)
    assert [(o.image_id, o.item_key, o.detected) for o in scores.items] == [
        ("q1", "item1", True),
        ("q1", "item2", False),
        ("q2", "item1", False),
    ]


@pytest.mark.parametrize(("height", "correct"), [(49, False), (50, True), (51, True)])
def test_a_gallery_crop_needs_iou_at_least_one_half(height, correct):
    crop_box = (0, 0, 100, height)  # IoU with the shop garment = height / 100
    assert iou(crop_box, BOX) == pytest.approx(height / 100)

    scores = run([QUERY], {"q1": [detection(BOX, "trousers", 0.9, crop("g1", crop_box))]})

    assert scores.topk_accuracy[1] == (1.0 if correct else 0.0)
    assert scores.items[0].first_correct_rank == (1 if correct else None)
    assert scores.map_at_20 == (1.0 if correct else 0.0)


def test_a_gallery_crop_must_hit_the_garment_of_the_query_style():
    # the shop photo shows the pair's style-1 trousers and, elsewhere, its style-2 top
    shop = image(
        "g1",
        "shop",
        7,
        garment("item1", "short_sleeve_top", ELSEWHERE, 2),
        garment("item2", "trousers", BOX, 1),
    )
    hits_style_2 = detection(BOX, "trousers", 0.9, crop("g1", ELSEWHERE), crop("g1", BOX))

    scores = run([QUERY], {"q1": [hits_style_2]}, gallery=gallery_of(shop))

    assert scores.items[0].first_correct_rank == 2
    assert scores.map_at_20 == 0.5  # R = 1, found at rank 2


def test_style_zero_items_do_not_count_and_detections_assigned_to_them_are_ignored():
    query = image(
        "q1",
        "user",
        7,
        garment("item1", "long_sleeve_top", (0, 0, 100, 100), 0),
        garment("item2", "trousers", (0, 80, 100, 200), 1),
    )
    # a category-agnostic detection overlapping both: IoU 0.8 with the style-0 top, 0.2 with the trousers
    on_style_zero = detection((0, 0, 100, 80), "garment", 0.9, crop("g1"))
    assert iou(on_style_zero.box, query.items[0].box) == pytest.approx(0.8)
    assert iou(on_style_zero.box, query.items[1].box) == pytest.approx(0.0)

    nudged = detection((0, 20, 100, 100), "garment", 0.9, crop("g1"))  # IoU 0.8 top, 20/180 trousers
    scores = run([query], {"q1": [on_style_zero, nudged]})

    assert scores.query_items == 1
    assert [o.item_key for o in scores.items] == ["item2"]
    assert scores.detected_items == 0
    assert scores.topk_accuracy[20] == 0.0


def test_a_detection_goes_to_the_largest_iou_garment_of_its_category():
    query = image(
        "q1",
        "user",
        7,
        garment("item1", "short_sleeve_top", (0, 0, 100, 100), 2),
        garment("item2", "trousers", (0, 50, 100, 150), 1),
    )
    # IoU 1/3 with item1, 1.0 with item2: goes to item2 although item1 comes first
    scores = run([query], {"q1": [detection((0, 50, 100, 150), "garment", 0.9, crop("g1"))]})

    assert [(o.item_key, o.detected, o.detection_iou) for o in scores.items] == [
        ("item1", False, None),
        ("item2", True, 1.0),
    ]


def test_a_detection_with_equal_iou_goes_to_the_lower_item_index():
    query = image(
        "q1",
        "user",
        7,
        garment("item1", "trousers", (0, 0, 100, 100), 2),
        garment("item2", "skirt", (0, 0, 100, 100), 1),
    )
    scores = run([query], {"q1": [detection(BOX, "bottom", 0.9, crop("g1"))]})

    assert [(o.item_key, o.detected) for o in scores.items] == [("item1", True), ("item2", False)]


def test_the_highest_scoring_of_two_detections_stands_even_when_the_other_would_retrieve():
    wrong = detection((0, 0, 100, 90), "trousers", 0.9, crop("x1"))
    right = detection(BOX, "trousers", 0.6, crop("g1"))

    scores = run([QUERY], {"q1": [right, wrong]})

    [item] = scores.items
    assert item.detected
    assert item.detection_iou == pytest.approx(0.9)  # the IoU of the standing detection
    assert item.first_correct_rank is None
    assert scores.topk_accuracy[20] == 0.0
    assert scores.map_at_20 == 0.0


def test_of_two_detections_with_equal_scores_the_earlier_stands():
    first = detection(BOX, "trousers", 0.7, crop("g1"))
    second = detection(BOX, "trousers", 0.7, crop("x1"))

    assert run([QUERY], {"q1": [first, second]}).topk_accuracy[1] == 1.0
    assert run([QUERY], {"q1": [second, first]}).topk_accuracy[1] == 0.0


def test_topk_accuracy_at_several_k():
    first_correct = [1, 3, 7, 12, None]
    queries, detections, gallery = [], {}, {"x1": OTHER}
    for pair_id, rank in enumerate(first_correct, start=10):
        query_id, shop_id = f"q{pair_id}", f"g{pair_id}"
        queries.append(image(query_id, "user", pair_id, garment("item1", "skirt", BOX, 1)))
        gallery[shop_id] = image(shop_id, "shop", pair_id, garment("item1", "skirt", BOX, 1))
        results = [crop("x1")] * 25 if rank is None else [crop("x1")] * (rank - 1) + [crop(shop_id)]
        detections[query_id] = [detection(BOX, "skirt", 0.9, *results)]

    scores = run(queries, detections, gallery=gallery)

    assert [o.first_correct_rank for o in scores.items] == first_correct
    assert scores.ks == (1, 5, 10, 15, 20)
    assert scores.topk_accuracy == {1: 0.2, 5: 0.4, 10: 0.6, 15: 0.8, 20: 0.8}
    # AP = 1 / rank when R = 1
    assert scores.map_at_20 == pytest.approx((1 + 1 / 3 + 1 / 7 + 1 / 12) / 5)

    custom = run(queries, detections, gallery=gallery, ks=(3, 2))
    assert custom.topk_accuracy == {2: 0.2, 3: 0.4}


def test_map_at_20_with_two_relevant_garments_and_a_duplicate_crop():
    gallery = gallery_of(
        image("g1", "shop", 7, garment("item1", "trousers", BOX, 1), garment("item2", "vest", ELSEWHERE, 2)),
        image("g2", "shop", 7, garment("item1", "trousers", (10, 10, 110, 110), 1)),
        image("g3", "shop", 7, garment("item1", "trousers", BOX, 0)),  # style 0: not part of R
        OTHER,  # same style, another pair: not part of R
    )
    results = (
        crop("x1"),  # rank 1: wrong pair
        crop("g1"),  # rank 2: finds g1.item1
        crop("g1", (0, 0, 100, 95)),  # rank 3: g1.item1 again: correct but not relevant
        crop("g2", (10, 10, 110, 110)),  # rank 4: finds g2.item1
    )

    scores = run([QUERY], {"q1": [detection(BOX, "trousers", 0.9, *results)]}, gallery=gallery)

    # R = 2; rel = [0, 1, 0, 1]; AP = (P@2 + P@4) / 2 = (1/2 + 2/4) / 2
    [item] = scores.items
    assert item.average_precision == pytest.approx(0.5)
    assert scores.map_at_20 == pytest.approx(0.5)
    assert item.first_correct_rank == 2
    assert scores.topk_accuracy == {1: 0.0, 5: 1.0, 10: 1.0, 15: 1.0, 20: 1.0}


def test_map_at_20_divides_by_at_most_20_relevant_garments():
    # 25 shop photos of the pair: R = 25, but a perfect top 20 scores AP 1
    gallery = {f"g{i}": image(f"g{i}", "shop", 7, garment("item1", "trousers", BOX, 1)) for i in range(25)}
    results = [crop(f"g{i}") for i in range(20)]

    scores = run([QUERY], {"q1": [detection(BOX, "trousers", 0.9, *results)]}, gallery=gallery)

    assert scores.map_at_20 == pytest.approx(1.0)


def test_map_at_20_ignores_crops_past_rank_20():
    results = [crop("x1")] * 20 + [crop("g1")]

    scores = run([QUERY], {"q1": [detection(BOX, "trousers", 0.9, *results)]}, ks=(20, 25))

    assert scores.items[0].first_correct_rank == 21
    assert scores.map_at_20 == 0.0
    assert scores.topk_accuracy == {20: 0.0, 25: 1.0}


def test_a_gallery_image_of_another_pair_is_never_correct():
    # x1 shows the same category and style at the very same box, but it is pair 8
    scores = run([QUERY], {"q1": [detection(BOX, "trousers", 0.9, crop("x1"), crop("x1"))]})

    assert scores.items[0].first_correct_rank is None
    assert scores.items[0].average_precision == 0.0
    assert scores.topk_accuracy[20] == 0.0


def test_detection_recall_at_50_counts_matching_detections_with_iou_at_least_one_half():
    query = image(
        "q1",
        "user",
        7,
        garment("item1", "short_sleeve_top", (0, 0, 100, 100), 1),
        garment("item2", "trousers", (200, 0, 300, 100), 2),
        garment("item3", "skirt", (400, 0, 500, 100), 3),
        garment("item4", "shorts", (600, 0, 700, 100), 4),
        garment("item5", "vest", (800, 0, 900, 100), 5),
    )
    detections = [
        detection((0, 0, 100, 60), "short_sleeve_top", 0.9),  # IoU 0.6: recalled
        detection((200, 0, 300, 40), "trousers", 0.9),  # IoU 0.4: assigned, not recalled
        detection((400, 0, 500, 100), "long_sleeve_dress", 0.9),  # wrong category: neither
        detection((600, 0, 700, 50), "bottom", 0.9),  # coarse group, IoU exactly 0.5: recalled
        detection((800, 0, 900, 30), "vest", 0.9),  # IoU 0.3 stands for item5 ...
        detection((800, 0, 900, 80), "vest", 0.2),  # ... but this IoU 0.8 one recalls it
    ]

    scores = run([query], {"q1": detections})

    assert scores.query_items == 5
    assert scores.detected_items == 4
    assert scores.detection_recall_at_50 == pytest.approx(3 / 5)
    assert [o.detection_iou for o in scores.items] == pytest.approx([0.6, 0.4, None, 0.5, 0.3])


def test_only_user_images_are_queries():
    shop_query = image("s1", "shop", 7, garment("item1", "trousers", BOX, 1))

    scores = run([QUERY, shop_query], {"q1": [], "s1": [detection(BOX, "trousers", 0.9, crop("g1"))]})

    assert scores.query_items == 1
    assert scores.detected_items == 0


def test_bad_inputs_are_refused_with_a_clear_error():
    with pytest.raises(EvaluationInputError, match="'nowhere', which is not in the gallery"):
        run([QUERY], {"q1": [detection(BOX, "trousers", 0.9, crop("nowhere"))]})
    with pytest.raises(EvaluationInputError, match="no query items"):
        run([image("q1", "user", 7, garment("item1", "trousers", BOX, 0))], {})
    with pytest.raises(EvaluationInputError, match="more than once"):
        run([QUERY, QUERY], {})
    with pytest.raises(EvaluationInputError, match="ks must be"):
        run([QUERY], {}, ks=(0, 5))


# ---------------------------------------------------------------- report


def _result(name: str, description: str, signature: str) -> ConfigResult:
    queries = [QUERY, image("q2", "user", 9, garment("item1", "skirt", BOX, 1))]
    scores = run(queries, {"q1": [detection((0, 0, 100, 80), "trousers", 0.9, crop("x1"), crop("g1"))]})
    return ConfigResult(name, description, signature, scores, {"index": 12.5, "search": 3.25})


def test_markdown_table_has_a_row_per_configuration():
    table = markdown_table(
        [_result("yolo+clip", "YOLO | whole image → WBF → CLIP", "0123456789abcdef"), _result("base", "", "")]
    )

    lines = table.splitlines()
    assert lines[0] == (
        "| configuration | signature | top-1 | top-5 | top-10 | top-15 | top-20 | mAP@20 | "
        "detected / query items | det. recall@0.5 |"
    )
    assert lines[1] == "|---|---|---|---|---|---|---|---|---|---|"
    assert lines[2] == (
        "| yolo+clip: YOLO \\| whole image → WBF → CLIP | 0123456789ab "
        "| 0.000 | 0.500 | 0.500 | 0.500 | 0.500 | 0.250 | 1 / 2 | 0.500 |"
    )
    assert lines[3].startswith("| base |  | 0.000 | 0.500 |")
    assert len(lines) == 4


def test_json_round_trip_keeps_every_item_outcome(tmp_path):
    results = [_result("yolo+clip", "YOLO → CLIP", "abc"), _result("base", "whole image", "")]
    extra = {"seed": 0, "machine": "8 CPU", "command": "clothes-search eval deepfashion2"}
    path = tmp_path / "results.json"

    write_json(results, path, extra)

    raw = json.loads(path.read_text())
    assert raw["run"] == extra
    assert raw["results"][0]["scores"]["topk_accuracy"]["5"] == 0.5
    assert raw["results"][0]["scores"]["items"][0]["first_correct_rank"] == 2
    assert read_json(path) == (results, extra)


def test_plot_topk_writes_a_png(tmp_path):
    path = tmp_path / "topk.png"

    plot_topk([_result("a", "", ""), _result("b", "", "")], path, "DeepFashion2 validation")

    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000
    with Image.open(path) as png:
        assert png.size == (840, 540)
