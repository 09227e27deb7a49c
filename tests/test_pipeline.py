"""The whole pipeline core on real photos with the real offline models (default configuration)."""

from __future__ import annotations

import numpy as np
import pytest
from sample_images import product_shot

from ingestion.pipeline import Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(models_dir):
    from clothes_search.settings import Settings

    return Pipeline(Settings.load(models_dir=models_dir)).load()


def garments_by_category(analysis):
    found: dict[str, list] = {}
    for garment in analysis.garments:
        found.setdefault(garment.category, []).append(garment)
    return found


def test_full_body_photo_gives_a_top_and_a_bottom_agreed_by_two_detectors(pipeline, messi):
    [analysis] = pipeline.analyse([messi])
    found = garments_by_category(analysis)
    assert "top" in found and "bottom" in found, [g.category for g in analysis.garments]
    top, bottom = found["top"][0], found["bottom"][0]
    assert len(top.detectors) >= 2 and len(bottom.detectors) >= 2
    assert top.box.y1 < bottom.box.y1 and top.box.y2 < bottom.box.y2
    assert not analysis.fallback_used
    signature = pipeline.signature
    assert analysis.vectors.shape == (len(analysis.garments), signature.dim)
    assert np.allclose(np.linalg.norm(analysis.vectors, axis=1), 1.0, atol=1e-5)


def test_upper_body_portrait_gives_a_top_only(pipeline, astronaut):
    [analysis] = pipeline.analyse([astronaut])
    found = garments_by_category(analysis)
    assert "top" in found
    assert "bottom" not in found


def test_product_shot_without_a_person_falls_back_to_the_whole_image(pipeline):
    image = product_shot()
    [analysis] = pipeline.analyse([image])
    assert analysis.fallback_used
    [garment] = analysis.garments
    assert garment.is_fallback and garment.category == "garment" and garment.detectors == ()
    assert garment.box.as_list() == [0.0, 0.0, float(image.width), float(image.height)]
    assert analysis.vectors.shape == (1, pipeline.signature.dim)


def test_without_fallback_an_image_without_garments_has_no_vectors(make_settings, models_dir):
    pipeline = Pipeline(make_settings(models_dir=models_dir, pipeline={"fallback_to_whole_image": False}))
    [analysis] = pipeline.analyse([product_shot()])
    assert analysis.garments == [] and not analysis.fallback_used
    assert analysis.vectors.shape == (0, pipeline.signature.dim)


def test_a_batch_gives_the_same_results_as_single_images_in_order(pipeline, messi, astronaut):
    images = [astronaut, messi, product_shot()]
    together = pipeline.analyse(images)
    for image, batched in zip(images, together, strict=True):
        [alone] = pipeline.analyse([image])
        assert [g.category for g in alone.garments] == [g.category for g in batched.garments]
        assert np.allclose(alone.vectors, batched.vectors, atol=1e-4)


def test_same_garment_is_nearer_to_itself_than_to_other_garments(pipeline, messi, astronaut):
    """A retrieval sanity check: a shifted, rescaled copy of a photo embeds close to the original."""
    shifted = messi.crop((10, 5, messi.width, messi.height)).resize((480, 300))
    [original, copy, other] = pipeline.analyse([messi, shifted, astronaut])
    top = garments_by_category(original)["top"][0]
    top_vector = original.vectors[original.garments.index(top)]
    copy_top = copy.vectors[[g.category for g in copy.garments].index("top")]
    other_top = other.vectors[[g.category for g in other.garments].index("top")]
    assert float(top_vector @ copy_top) > float(top_vector @ other_top) + 0.1


def test_models_load_lazily_not_at_construction(make_settings, models_dir):
    pipeline = Pipeline(make_settings(models_dir=models_dir))
    assert not any(e.loaded for e in pipeline.embedders)


def test_pose_detectors_share_one_estimator(pipeline):
    first, second = pipeline.detectors
    assert first.estimator is second.estimator
