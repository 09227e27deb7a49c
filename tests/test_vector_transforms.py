"""Database-side augmentation and PCA whitening: definitions, properties and malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from unit_vectors import clusters, frozen, mean_cosines, random_unit, unit

from db import vector_transforms
from db.vector_transforms import PCAWhitening, augment_one, database_side_augmentation

# --- database-side augmentation ---------------------------------------------------------------------------


def loop_dba(gallery, top_n, weights):
    g = unit(gallery)
    out = []
    for i in range(len(g)):
        others = sorted((j for j in range(len(g)) if j != i), key=lambda j: (-float(g[i] @ g[j]), j))[:top_n]
        members = [i, *others]
        n = len(others)
        w = [1.0] * (n + 1) if weights == "uniform" else [(n + 1 - r) / (n + 1) for r in range(n + 1)]
        out.append(unit(sum(w_r * g[m] for w_r, m in zip(w, members, strict=True))))
    return np.array(out)


def test_dba_with_top_n_zero_is_the_identity():
    rng = np.random.default_rng(10)
    gallery = random_unit(rng, 12)
    out = database_side_augmentation(gallery, 0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, gallery, atol=1e-6)


@pytest.mark.parametrize("weights", ["uniform", "linear"])
@pytest.mark.parametrize("top_n", [1, 2, 5])
def test_dba_matches_the_definition(top_n, weights):
    rng = np.random.default_rng(top_n)
    gallery = (rng.normal(size=(20, 16)) * 2.0).astype(np.float32)
    out = database_side_augmentation(frozen(gallery), top_n, weights=weights)
    assert out.dtype == np.float32 and out.shape == gallery.shape
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out, loop_dba(gallery, top_n, weights), atol=1e-6)


def test_dba_top_n_beyond_the_gallery_averages_everything():
    rng = np.random.default_rng(11)
    gallery = random_unit(rng, 6)
    out = database_side_augmentation(gallery, 100)
    np.testing.assert_allclose(out, np.repeat(unit(gallery.sum(axis=0))[None], 6, axis=0), atol=1e-6)
    assert database_side_augmentation(gallery[:0], 3).shape == (0, 16)
    np.testing.assert_allclose(database_side_augmentation(gallery[:1], 3), gallery[:1], atol=1e-6)


def test_dba_keeps_a_vector_with_an_exact_duplicate():
    rng = np.random.default_rng(12)
    gallery = random_unit(rng, 10)
    gallery[7] = gallery[2]
    out = database_side_augmentation(gallery, 1)
    np.testing.assert_allclose(out[[2, 7]], gallery[[2, 7]], atol=1e-6)


@pytest.mark.parametrize("weights", ["uniform", "linear"])
def test_dba_tightens_isolated_clusters_and_keeps_them_apart(weights):
    gallery, labels = clusters(13)
    before_mean, _, _ = mean_cosines(gallery, labels)
    out = database_side_augmentation(gallery, 3, weights=weights)
    after_mean, after_inter_max, after_intra_min = mean_cosines(out, labels)
    assert after_mean > before_mean
    assert after_intra_min > after_inter_max


def test_dba_in_blocks_matches_one_block(monkeypatch):
    rng = np.random.default_rng(14)
    gallery = random_unit(rng, 23)
    whole = database_side_augmentation(gallery, 3, weights="linear")
    monkeypatch.setattr(vector_transforms, "_BLOCK_ROWS", 5)
    np.testing.assert_allclose(database_side_augmentation(gallery, 3, weights="linear"), whole, atol=1e-7)


@pytest.mark.parametrize(
    ("gallery", "top_n", "weights", "message"),
    [
        (np.ones(4), 1, "uniform", "gallery must be a 2-D"),
        (np.ones((2, 4)), -1, "uniform", "top_n must be >= 0"),
        (np.ones((2, 4)), 1, "softmax", "weights must be one of"),
        (np.array([[1.0, np.inf]]), 1, "uniform", "gallery contains NaN or infinite"),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), 1, "linear", "gallery has all-zero rows"),
    ],
)
def test_dba_rejects_invalid_input(gallery, top_n, weights, message):
    with pytest.raises(ValueError, match=message):
        database_side_augmentation(gallery, top_n, weights=weights)


@pytest.mark.parametrize("weights", ["uniform", "linear"])
def test_one_vector_with_its_neighbours_is_augmented_as_in_the_whole_gallery(weights):
    rng = np.random.default_rng(15)
    gallery = (rng.normal(size=(12, 16)) * 3.0).astype(np.float32)
    whole = database_side_augmentation(gallery, 3, weights=weights)
    g = unit(gallery)
    for i in (0, 5, 11):
        others = sorted((j for j in range(12) if j != i), key=lambda j: (-float(g[i] @ g[j]), j))[:3]
        one = augment_one(gallery[i], gallery[others], weights)
        assert one.dtype == np.float32
        np.testing.assert_allclose(one, whole[i], atol=1e-6)
    np.testing.assert_allclose(augment_one(gallery[0], gallery[:0], weights), g[0], atol=1e-6)


# --- PCA whitening ----------------------------------------------------------------------------------------


def anisotropic_sample(seed, n=2000, d=16):
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scales = np.linspace(0.2, 3.0, d)
    return (rng.normal(size=(n, d)) * scales @ rotation.T + rng.normal(size=d) * 4.0).astype(np.float32)


def test_whitened_training_data_have_identity_covariance():
    sample = anisotropic_sample(20)
    pca = PCAWhitening.fit(frozen(sample))
    assert pca.dim == 16 and pca.input_dim == 16
    raw = pca.transform(sample, normalise=False)
    assert raw.dtype == np.float32 and raw.shape == (2000, 16)
    np.testing.assert_allclose(np.cov(raw, rowvar=False), np.eye(16), atol=1e-3)
    np.testing.assert_allclose(raw.mean(axis=0), 0.0, atol=1e-3)
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(sample.astype(np.float64), rowvar=False)))[::-1]
    np.testing.assert_allclose(pca.explained_variance, eigenvalues, rtol=1e-6)


def test_transform_gives_unit_rows_of_the_requested_dimension():
    sample = anisotropic_sample(21, n=300)
    pca = PCAWhitening.fit(sample, dim=5)
    out = pca.transform(frozen(sample[:40]))
    assert out.shape == (40, 5) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert np.all(np.diff(pca.explained_variance) <= 0)
    assert pca.transform(sample[:0]).shape == (0, 5)
    np.testing.assert_array_equal(pca.transform(pca.mean[None, :]), np.zeros((1, 5), dtype=np.float32))


def test_to_bytes_from_bytes_round_trips_exactly():
    pca = PCAWhitening.fit(anisotropic_sample(22, n=200), dim=7, eps=1e-4)
    restored = PCAWhitening.from_bytes(pca.to_bytes())
    for field in ("mean", "projection", "explained_variance"):
        assert getattr(restored, field).dtype == getattr(pca, field).dtype
        np.testing.assert_array_equal(getattr(restored, field), getattr(pca, field))
    assert restored.eps == pca.eps
    probe = anisotropic_sample(23, n=10)
    np.testing.assert_array_equal(restored.transform(probe), pca.transform(probe))


def test_rank_deficient_data_need_shrinkage():
    sample = anisotropic_sample(25, n=100, d=6).astype(np.float64)
    sample[:, 5] = sample[:, 4]
    with pytest.raises(ValueError, match="zero variance"):
        PCAWhitening.fit(sample, eps=0.0)
    assert np.isfinite(PCAWhitening.fit(sample).transform(sample)).all()
    PCAWhitening.fit(sample, dim=5, eps=0.0)  # the zero-variance axis left out


@pytest.mark.parametrize(
    ("vectors", "kwargs", "message"),
    [
        (np.ones((1, 4)), {}, "at least 2 training vectors"),
        (np.ones(4), {}, "must be a non-empty 2-D"),
        (
            np.arange(12.0).reshape(3, 4),
            {"dim": 3},
            r"dim must be an integer in \[1, min\(N - 1, d\)\] = \[1, 2\]",
        ),
        (np.arange(40.0).reshape(10, 4) ** 2, {"dim": 5}, r"= \[1, 4\]"),
        (np.arange(40.0).reshape(10, 4) ** 2, {"dim": 0}, "dim must be"),
        (np.arange(40.0).reshape(10, 4) ** 2, {"eps": -1e-3}, "eps must be a finite number >= 0"),
        (np.full((3, 4), np.nan), {}, "vectors contains NaN"),
    ],
)
def test_fit_rejects_invalid_input(vectors, kwargs, message):
    with pytest.raises(ValueError, match=message):
        PCAWhitening.fit(vectors, **kwargs)


def test_transform_rejects_invalid_input():
    pca = PCAWhitening.fit(anisotropic_sample(26, n=50, d=4))
    with pytest.raises(ValueError, match="must have 4 columns"):
        pca.transform(np.ones((2, 3)))
    with pytest.raises(ValueError, match="x contains NaN"):
        pca.transform(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="read-only"):
        pca.mean[0] = 1.0
