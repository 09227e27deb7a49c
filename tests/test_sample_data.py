"""The offline sample set (`make-sample-data`): format, pairing, splits, determinism, boxes."""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clothes_search.cli.sample_data import make_sample_data
from clothes_search.sample_data import MissingSourceError, SampleDataError, SampleSources, build_sample_set
from clothes_search.sample_data.backgrounds import PROCEDURAL, procedural_background
from clothes_search.sample_data.compositing import composite, to_uint8
from clothes_search.sample_data.fashion_mnist import load_fashion_mnist, read_idx
from clothes_search.sample_data.split import SPLIT_PART, plan_split, render_split
from clothes_search.sample_data.styles import SEEN, UNSEEN, check_disjoint
from ingestion.feed import parse_feed

# DeepFashion2's categories as its own files spell them, by category_id.
DF2_CATEGORIES = {
    1: "short sleeve top",
    2: "long sleeve top",
    3: "short sleeve outwear",
    4: "long sleeve outwear",
    5: "vest",
    6: "sling",
    7: "shorts",
    8: "trousers",
    9: "skirt",
    10: "short sleeve dress",
    11: "long sleeve dress",
    12: "vest dress",
    13: "sling dress",
}
ITEM_FIELDS = {
    "category_id",
    "category_name",
    "bounding_box",
    "style",
    "scale",
    "occlusion",
    "zoom_in",
    "viewpoint",
    "segmentation",
    "landmarks",
}
SPLITS = ("validation", "validation_unseen", "train")
SIZES = {"validation_items": 7, "validation_unseen_items": 6, "train_items": 6}
BUILD_SIZES = {"validation_items": 7, "unseen_items": 6, "train_items": 6}


def _require_sources() -> SampleSources:
    sources = SampleSources()
    try:
        sources.check()
    except MissingSourceError as exc:
        pytest.fail(str(exc), pytrace=False)
    return sources


@pytest.fixture(scope="module")
def sample_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny sets: ``a`` and ``b`` with seed 0, ``other`` with seed 1."""
    _require_sources()
    root = tmp_path_factory.mktemp("sample-sets")
    sets = {"a": (root / "a", 0), "b": (root / "b", 0), "other": (root / "other", 1)}
    for out, seed in sets.values():
        build_sample_set(out, seed=seed, **BUILD_SIZES)
    return {name: out for name, (out, _) in sets.items()}


@pytest.fixture(scope="module")
def sample_set(sample_sets: dict[str, Path]) -> Path:
    return sample_sets["a"]


def _annotations(split_dir: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((split_dir / "annos").glob("*.json"))}


def _garments(annotation: dict) -> list[dict]:
    return [value for key, value in annotation.items() if key.startswith("item")]


def _catalog(split_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (split_dir / "catalog.jsonl").read_text().splitlines()]


# -- Fashion-MNIST reader ---------------------------------------------------------------------------


def test_read_idx_decodes_header_and_data(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "tiny-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0\0\x08\x03" + struct.pack(">3I", 2, 3, 4) + array.tobytes()))
    np.testing.assert_array_equal(read_idx(path), array)

    path.write_bytes(gzip.compress(b"\0\0\x08\x03" + struct.pack(">3I", 2, 3, 5) + array.tobytes()))
    with pytest.raises(SampleDataError, match="IDX header promises"):
        read_idx(path)


def test_fashion_mnist_has_its_documented_shape_and_balanced_labels() -> None:
    sources = _require_sources()
    for part, count in (("train", 60000), ("t10k", 10000)):
        data = load_fashion_mnist(*sources.fashion_mnist_files(part))
        assert data.images.shape == (count, 28, 28)
        assert data.images.dtype == np.uint8
        assert np.bincount(data.labels).tolist() == [count // 10] * 10
        # garments are bright on a black background: the corners are dark, the centre is not
        assert data.images[:, 0, 0].mean() < 5
        assert data.images[:, 10:18, 10:18].mean() > 50


def test_missing_inputs_name_the_install_script(tmp_path: Path) -> None:
    sources = SampleSources(fashion_mnist_dir=tmp_path / "no-such-dir")
    with pytest.raises(MissingSourceError, match=r"scripts/system-deps\.sh") as caught:
        build_sample_set(tmp_path / "out", sources=sources, **BUILD_SIZES)
    assert str(tmp_path / "no-such-dir" / "train-images-idx3-ubyte.gz") in str(caught.value)
    assert not (tmp_path / "out").exists()


# -- the files --------------------------------------------------------------------------------------


def test_every_annotation_is_valid_deepfashion2(sample_set: Path) -> None:
    for split in SPLITS:
        annotations = _annotations(sample_set / split)
        assert annotations, split
        assert sorted(annotations) == [f"{n:06d}" for n in range(1, len(annotations) + 1)]
        for image_id, annotation in annotations.items():
            width, height = Image.open(sample_set / split / "image" / f"{image_id}.jpg").size
            assert annotation["source"] in ("user", "shop")
            assert isinstance(annotation["pair_id"], int) and annotation["pair_id"] > 0
            keys = [key for key in annotation if key.startswith("item")]
            assert keys == [f"item{n}" for n in range(1, len(keys) + 1)]
            assert set(annotation) == {"source", "pair_id", *keys}
            for garment in _garments(annotation):
                assert set(garment) == ITEM_FIELDS
                assert garment["category_name"] == DF2_CATEGORIES[garment["category_id"]]
                x1, y1, x2, y2 = garment["bounding_box"]
                assert all(isinstance(value, int) for value in (x1, y1, x2, y2))
                assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (split, image_id, garment)
                assert garment["occlusion"] in (1, 2, 3)
                assert garment["style"] >= 0
                if annotation["source"] == "shop":
                    assert garment["style"] > 0  # style 0 only for distractors in consumer images
            if annotation["source"] == "shop":
                assert len(keys) == 1
                assert _garments(annotation)[0]["occlusion"] == 1


def test_consumer_garments_are_matched_by_shop_images_of_their_pair(sample_set: Path) -> None:
    pair_ids = {}
    for split in SPLITS:
        annotations = _annotations(sample_set / split).values()
        shop = {
            (a["pair_id"], g["style"]): g["category_id"]
            for a in annotations
            if a["source"] == "shop"
            for g in _garments(a)
        }
        user = [a for a in annotations if a["source"] == "user"]
        queries = [(a["pair_id"], g) for a in user for g in _garments(a) if g["style"] > 0]
        assert queries
        for pair_id, garment in queries:
            assert shop[(pair_id, garment["style"])] == garment["category_id"]
        # every pair has consumer images and 2-3 items with styles 1..n
        assert {a["pair_id"] for a in user} == {pair_id for pair_id, _ in shop}
        for pair_id in {pair_id for pair_id, _ in shop}:
            styles = sorted(style for pid, style in shop if pid == pair_id)
            assert styles in ([1, 2], [1, 2, 3])
        pair_ids[split] = {pair_id for pair_id, _ in shop}
    all_ids = [pair_id for ids in pair_ids.values() for pair_id in ids]
    assert len(all_ids) == len(set(all_ids))


def test_splits_share_no_garment(sample_set: Path) -> None:
    sources = _require_sources()
    garments = {}
    for split in SPLITS:
        data = load_fashion_mnist(*sources.fashion_mnist_files(SPLIT_PART[split]))
        rows = _catalog(sample_set / split)
        origins = {row["attributes"]["fashion_mnist"] for row in rows}
        assert all(origin.startswith(f"{SPLIT_PART[split]}:") for origin in origins)
        garments[split] = {data.images[int(origin.split(":")[1])].tobytes() for origin in origins}
        assert len({row["attributes"]["item_id"] for row in rows}) == SIZES[f"{split}_items"]
    assert not garments["validation"] & garments["train"]
    assert not garments["validation_unseen"] & garments["train"]
    assert not garments["validation"] & garments["validation_unseen"]


def test_catalog_feed_parses_and_describes_the_shop_images(sample_set: Path) -> None:
    for split in SPLITS:
        split_dir = sample_set / split
        result = parse_feed(split_dir / "catalog.jsonl")
        assert result.ok, result.errors
        annotations = _annotations(split_dir)
        shop_ids = sorted(image_id for image_id, a in annotations.items() if a["source"] == "shop")
        assert [row.sku for _, row in result.rows] == [f"{split}-{image_id}" for image_id in shop_ids]
        for _, row in result.rows:
            image_id = row.sku.removeprefix(f"{split}-")
            garment = _garments(annotations[image_id])[0]
            assert Path(row.image_path) == (split_dir / "image" / f"{image_id}.jpg").resolve()
            assert row.category == garment["category_name"].replace(" ", "_")
            assert row.attributes["pair_id"] == annotations[image_id]["pair_id"]
            assert row.attributes["style"] == garment["style"]
            assert row.color and row.color.capitalize() in row.title
            assert row.currency == "EUR" and row.price is not None and row.brand
        # the shop images of one item describe the same product
        by_item: dict[str, set] = {}
        for _, row in result.rows:
            by_item.setdefault(str(row.attributes["item_id"]), set()).add((row.title, row.price, row.brand))
        assert all(len(facts) == 1 for facts in by_item.values())
        assert len(by_item) == SIZES[f"{split}_items"]


def test_manifest_counts_the_files_and_licenses_name_the_sources(sample_set: Path) -> None:
    manifest = json.loads((sample_set / "manifest.json").read_text())
    assert manifest["seed"] == 0
    assert manifest["flags"] == {
        **BUILD_SIZES,
        "shop_per_item": 2,
        "user_per_pair": 2,
        "train_user_per_pair": 2,
    }
    for split in SPLITS:
        annotations = _annotations(sample_set / split).values()
        counts = manifest["splits"][split]
        assert counts["items"] == SIZES[f"{split}_items"]
        assert counts["shop_images"] == 2 * counts["items"]
        assert counts["shop_images"] == sum(a["source"] == "shop" for a in annotations)
        assert counts["user_images"] == 2 * counts["pairs"] == sum(a["source"] == "user" for a in annotations)
        user = [g for a in annotations if a["source"] == "user" for g in _garments(a)]
        assert counts["query_items"] == sum(g["style"] > 0 for g in user)
        assert counts["distractors"] == sum(g["style"] == 0 for g in user)
    licenses = (sample_set / "LICENSES.md").read_text()
    assert "Zalando SE" in licenses and "MIT" in licenses and "not a substitute" in licenses
    for source in manifest["sources"]:
        assert len(source["sha256"]) == 64
        assert Path(source["path"]).name in licenses


def test_held_out_styles_never_occur_in_the_train_split(tmp_path: Path) -> None:
    """Train (and seen validation) items, prints and backgrounds are the seen style's; the unseen split's
    are the unseen style's, and the two styles share no colour, print, background family or studio."""
    _require_sources()
    out = tmp_path / "set"
    build_sample_set(out, seed=5, validation_items=6, unseen_items=12, train_items=36, user_per_pair=3)
    seen_values = {
        "color": {c.name for c in SEEN.palette},
        "pattern": {p.value for p in SEEN.patterns},
        "background": {*SEEN.background_families, f"studio:{SEEN.studio}"},
    }
    unseen_values = {
        "color": {c.name for c in UNSEEN.palette},
        "pattern": {p.value for p in UNSEEN.patterns},
        "background": {*UNSEEN.background_families, f"studio:{UNSEEN.studio}"},
    }
    for kind in seen_values:
        assert not seen_values[kind] & unseen_values[kind], kind
    used: dict[str, dict[str, set[str]]] = {}
    for split in SPLITS:
        rows = _catalog(out / split)
        scenes = [json.loads(line) for line in (out / split / "scenes.jsonl").read_text().splitlines()]
        assert [scene["image_id"] for scene in scenes] == sorted(_annotations(out / split))
        used[split] = {
            "color": {row["color"] for row in rows},
            "pattern": {row["attributes"]["pattern"] for row in rows},
            "background": {scene["background"] for scene in scenes},
        }
        assert {scene["style"] for scene in scenes} == {"unseen" if split == "validation_unseen" else "seen"}
    for kind, values in seen_values.items():
        assert used["train"][kind] <= values, kind
        assert used["validation"][kind] <= values, kind
        assert used["validation_unseen"][kind] <= unseen_values[kind], kind
        assert not used["train"][kind] & used["validation_unseen"][kind], kind
    # the train split really is varied: several prints, colours and both photo and procedural places
    assert len(used["train"]["pattern"]) >= 3 and len(used["train"]["color"]) >= 6
    assert {family.split(":")[0] for family in used["train"]["background"]} == {
        "photo",
        "procedural",
        "studio",
    }
    assert {family.split(":")[0] for family in used["validation_unseen"]["background"]} == {
        "photo",
        "procedural",
        "studio",
    }


def test_styles_that_share_a_colour_are_refused() -> None:
    clash = replace(UNSEEN, name="clash", palette=(*UNSEEN.palette, SEEN.palette[0]))
    with pytest.raises(ValueError, match="share"):
        check_disjoint(SEEN, clash)


def test_procedural_backgrounds_are_images_and_depend_on_the_seed() -> None:
    for kind in PROCEDURAL:
        first = procedural_background(kind, np.random.default_rng(1), 64, 48)
        again = procedural_background(kind, np.random.default_rng(1), 64, 48)
        other = procedural_background(kind, np.random.default_rng(2), 64, 48)
        assert first.shape == (48, 64, 3) and first.dtype == np.float32
        assert first.min() >= 0.0 and first.max() <= 1.0 and first.std() > 0.01, kind
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other), kind
    with pytest.raises(SampleDataError, match="unknown procedural background"):
        procedural_background("marble", np.random.default_rng(0), 8, 8)


# -- determinism ------------------------------------------------------------------------------------


def _file_bytes(out: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(out)): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.parent.name in ("annos", "image")
    }


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(sample_sets: dict[str, Path]) -> None:
    first, second, other = (_file_bytes(sample_sets[name]) for name in ("a", "b", "other"))
    assert len(first) > 40
    assert first == second
    assert (sample_sets["a"] / "manifest.json").read_bytes() == (
        sample_sets["b"] / "manifest.json"
    ).read_bytes()
    common = set(first) & set(other)
    assert sum(first[name] != other[name] for name in common if name.endswith(".jpg")) == sum(
        name.endswith(".jpg") for name in common
    )
    assert any(first[name] != other[name] for name in common if name.endswith(".json"))


# -- boxes ------------------------------------------------------------------------------------------


def _box_of(mask: np.ndarray) -> list[int] | None:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


def test_boxes_bound_exactly_the_pixels_each_garment_changes(tmp_path: Path) -> None:
    """Re-composite every image without one garment: the pixels that change are exactly boxed.

    Also: nothing outside the boxes differs from the bare background (no unannotated garment shows),
    and the JPEG on disk is the composite.
    """
    sources = _require_sources()
    data = load_fashion_mnist(*sources.fashion_mnist_files("t10k"))
    photos = {path.name: Image.open(path).convert("RGB") for path in sources.background_files()}
    checked = {"user": 0, "shop": 0, "hidden_part": 0}
    plans = [
        plan_split("validation", data, items=12, seed=3, first_pair_id=1),
        plan_split("validation_unseen", data, items=12, seed=3, first_pair_id=1),
    ]
    rendered_images = [
        rendered
        for plan in plans
        for rendered in render_split(plan, data, photos, shop_per_item=1, user_per_pair=2)
    ]
    for rendered in rendered_images:
        scene = rendered.scene
        full = scene.render()
        height, width = full.shape[:2]
        annotated = _garments(rendered.annotation)
        assert len(annotated) == len(scene.garments)
        covered = np.zeros((height, width), dtype=bool)
        for record, placed in zip(annotated, scene.garments, strict=True):
            others = [layer for index, layer in enumerate(scene.layers) if index != placed.layer_index]
            changed = np.any(composite(scene.background, others) != full, axis=2)
            assert record["bounding_box"] == _box_of(changed), (rendered.image_id, record)
            x1, y1, x2, y2 = record["bounding_box"]
            covered[y1:y2, x1:x2] = True
            own = scene.layers[placed.layer_index]
            if (own.alpha > 0).sum() > changed.sum():
                checked["hidden_part"] += 1
        assert not np.any(np.any(full != scene.background, axis=2) & ~covered), rendered.image_id
        checked[rendered.source] += 1

        path = tmp_path / f"{rendered.image_id}.jpg"
        Image.fromarray(to_uint8(full)).save(path, quality=92)
        saved = np.asarray(Image.open(path), dtype=np.float32)
        assert np.abs(saved - to_uint8(full)).mean() < 3.0
    assert checked["user"] >= 16 and checked["shop"] == 24
    assert checked["hidden_part"] > 0  # some garments are partly hidden or cut by the border


# -- the command ------------------------------------------------------------------------------------


def test_command_refuses_a_non_empty_folder_unless_forced(tmp_path: Path) -> None:
    _require_sources()
    out = tmp_path / "set"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = [str(out), "--validation-items", "4", "--unseen-items", "4", "--train-items", "4", "--quiet"]
    runner = CliRunner()

    refused = runner.invoke(make_sample_data, args)
    assert refused.exit_code == 1
    assert "is not empty" in refused.output and not (out / "validation").exists()

    made = runner.invoke(make_sample_data, [*args, "--force"])
    assert made.exit_code == 0, made.output
    assert "validation: 4 items in 2 pairs, 8 shop images" in made.output
    assert (out / "notes.txt").read_text() == "mine"

    (out / "validation" / "annos" / "999999.json").write_text("{}")
    again = runner.invoke(make_sample_data, [*args, "--force", "--seed", "1"])
    assert again.exit_code == 0, again.output
    assert not (out / "validation" / "annos" / "999999.json").exists()
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1


def test_force_does_not_delete_folders_of_another_origin(tmp_path: Path) -> None:
    _require_sources()
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "keep.txt").write_text("someone's data")
    result = CliRunner().invoke(make_sample_data, [str(tmp_path), "--force", "--quiet"])
    assert result.exit_code == 1
    assert "not from a previous sample set" in result.output
    assert (tmp_path / "train" / "keep.txt").exists()
