"""Feature concatenation and the model signature."""

from __future__ import annotations

import numpy as np
import pytest

from ingestion.embedders.base import EmbedderIdentity
from ingestion.signature import ModelSignature, concatenate_features


def test_concatenation_is_unit_norm_and_mixes_cosines_by_squared_weights():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 5, 3))
    weights = (2.0, 1.0)
    x = concatenate_features([a[0], b[0]], weights)
    y = concatenate_features([a[1], b[1]], weights)
    assert x.shape == (5, 11) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)

    def cos(u, v):
        return np.sum(u * v, axis=1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)

    expected = (4 * cos(a[0], a[1]) + 1 * cos(b[0], b[1])) / 5
    assert np.allclose(np.sum(x * y, axis=1), expected, atol=1e-5)


def test_scale_of_a_model_output_does_not_matter():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(4, 2))
    assert np.allclose(
        concatenate_features([a, b], (1, 1)), concatenate_features([a * 100, b], (1, 1)), atol=1e-6
    )


def test_mismatched_blocks_are_refused():
    with pytest.raises(ValueError, match="rows"):
        concatenate_features([np.ones((2, 3)), np.ones((3, 3))], (1, 1))
    with pytest.raises(ValueError, match="weights"):
        concatenate_features([np.ones((2, 3))], (1, 1))


def identity(model: str = "lite0", weights: str = "sha256:abc", dim: int = 1280) -> EmbedderIdentity:
    return EmbedderIdentity("efficientnet_lite", model, weights, dim, {"size": 224})


def test_signature_hash_is_stable_and_sensitive_to_what_changes_vectors():
    base = ModelSignature((identity(), identity("lite2", "sha256:def")), (1.0, 1.0))
    same = ModelSignature((identity(), identity("lite2", "sha256:def")), (1.0, 1.0))
    assert base.hash == same.hash and len(base.hash) == 12
    assert base.dim == 2560
    variants = [
        ModelSignature((identity(), identity("lite2", "sha256:def")), (1.0, 2.0)),  # weight
        ModelSignature((identity("lite2", "sha256:def"), identity()), (1.0, 1.0)),  # order
        ModelSignature(
            (identity(weights="sha256:xyz"), identity("lite2", "sha256:def")), (1.0, 1.0)
        ),  # weights file
        ModelSignature((identity(),), (1.0,)),  # fewer models
    ]
    assert len({v.hash for v in variants} | {base.hash}) == 5
    assert "lite0" in base.description and "2560-d" in base.description
