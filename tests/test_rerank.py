"""k-reciprocal re-ranking: the vectorised version against a dense, loop-by-loop reading of the paper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search.rerank import k_reciprocal_rerank


def rerank_order(distances):
    """The gallery order for each query: increasing distance, ties in gallery order."""
    return np.argsort(distances, axis=1, kind="stable")


def reference_rerank(query, gallery, k1=20, k2=6, lambda_value=0.3):
    """Zhong et al. (CVPR 2017) straight from the definitions, with plain Python sets, dicts and loops.

    Conventions of the reference implementation it mirrors: ``N(p, k)`` is the ``k + 1`` nearest pool
    members (``p`` first, then by distance, then by index), ``½k1`` is ``round(k1 / 2)``, list slices clip
    ``k1`` and ``k2`` to the pool. Returns a ``(Q, G)`` float64 array of final distances.
    """
    pool = [np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for v in [*query, *gallery]]
    n, n_query = len(pool), len(query)

    # Squared Euclidean distance of unit vectors, 2 - 2·cos.
    dist = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                dist[i][j] = max(0.0, 2.0 - 2.0 * float(np.dot(pool[i], pool[j])))
    # "Each column divided by its maximum, then transposed", literally.
    col_max = [max(dist[r][c] for r in range(n)) or 1.0 for c in range(n)]
    original = [[dist[j][i] / col_max[i] for j in range(n)] for i in range(n)]

    ranking = [sorted(range(n), key=lambda j, i=i: (j != i, original[i][j], j)) for i in range(n)]

    def nearest(p, k):
        return ranking[p][: k + 1]

    def reciprocal(p, k):
        return {q for q in nearest(p, k) if p in nearest(q, k)}

    encoding = []
    for p in range(n):
        r_p = reciprocal(p, k1)
        expanded = set(r_p)
        for q in r_p:
            r_q = reciprocal(q, round(k1 / 2))
            if len(r_q & r_p) > 2 / 3 * len(r_q):
                expanded |= r_q
        weights = {q: math.exp(-original[p][q]) for q in expanded}
        total = sum(weights.values())
        encoding.append({q: w / total for q, w in weights.items()})

    expanded_encoding = []
    for p in range(n):
        neighbours = ranking[p][:k2]
        averaged = {}
        for q in neighbours:
            for key, value in encoding[q].items():
                averaged[key] = averaged.get(key, 0.0) + value / len(neighbours)
        expanded_encoding.append(averaged)

    inverted = {}  # column -> {pool member: its non-zero value in that column}
    for p, row in enumerate(expanded_encoding):
        for key, value in row.items():
            inverted.setdefault(key, {})[p] = value

    out = np.zeros((n_query, n - n_query))
    for i in range(n_query):
        shared = {}
        for key, value in expanded_encoding[i].items():
            for p, other in inverted[key].items():
                shared[p] = shared.get(p, 0.0) + min(value, other)
        for g in range(n - n_query):
            m = shared.get(n_query + g, 0.0)
            jaccard = 1.0 - m / (2.0 - m)
            out[i, g] = (1.0 - lambda_value) * jaccard + lambda_value * original[i][n_query + g]
    return out


def unit_vectors(rng, n, d=16):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(seed, noise=1.5, per_cluster=8, n_clusters=5, d=32):
    """One query and ``per_cluster`` gallery items per cluster: unit centres plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gallery_labels = np.repeat(np.arange(n_clusters), per_cluster)
    query_labels = np.arange(n_clusters)
    gallery = centres[gallery_labels] + noise * rng.normal(size=(gallery_labels.size, d)) / np.sqrt(d)
    query = centres[query_labels] + noise * rng.normal(size=(query_labels.size, d)) / np.sqrt(d)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    return query.astype(np.float32), gallery.astype(np.float32), query_labels, gallery_labels


def precision_at_5(order, query_labels, gallery_labels):
    return float(np.mean(gallery_labels[order[:, :5]] == query_labels[:, None]))


def assert_matches_reference(query, gallery, **params):
    got = k_reciprocal_rerank(query, gallery, **params)
    want = reference_rerank(query, gallery, **params)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(rerank_order(got), np.argsort(want, axis=1, kind="stable"))


@pytest.mark.parametrize("n_query", [1, 3])
@pytest.mark.parametrize("n_gallery", [1, 2, 3, 7, 30, 120])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_dense_reference_on_random_unit_vectors(seed, n_gallery, n_query):
    rng = np.random.default_rng(1000 * seed + 10 * n_gallery + n_query)
    vectors = unit_vectors(rng, n_query + n_gallery)
    assert_matches_reference(vectors[:n_query], vectors[n_query:])  # defaults k1=20, k2=6, λ=0.3


@pytest.mark.parametrize(
    ("k1", "k2", "lambda_value"), [(1, 1, 0.0), (2, 2, 0.5), (3, 1, 0.3), (5, 3, 0.1), (10, 40, 0.9)]
)
def test_matches_dense_reference_for_other_parameters(k1, k2, lambda_value):
    rng = np.random.default_rng(k1 * 100 + k2)
    vectors = unit_vectors(rng, 3 + 35)
    assert_matches_reference(vectors[:3], vectors[3:], k1=k1, k2=k2, lambda_value=lambda_value)


@pytest.mark.parametrize("seed", range(3))
def test_matches_dense_reference_on_clustered_data(seed):
    query, gallery, _, _ = clustered(seed)
    assert_matches_reference(query, gallery, k1=20, k2=6, lambda_value=0.3)
    assert_matches_reference(query[:1], gallery, k1=7, k2=3, lambda_value=0.3)


def test_reranking_clusters_is_at_least_as_precise_as_cosine():
    plain, reranked = [], []
    for seed in range(5):
        query, gallery, query_labels, gallery_labels = clustered(seed)
        cosine_order = np.argsort(-(query @ gallery.T), axis=1, kind="stable")
        rerank = rerank_order(k_reciprocal_rerank(query, gallery))
        plain.append(precision_at_5(cosine_order, query_labels, gallery_labels))
        reranked.append(precision_at_5(rerank, query_labels, gallery_labels))
        assert reranked[-1] >= plain[-1], (seed, plain[-1], reranked[-1])
    assert np.mean(reranked) > np.mean(plain)  # on this data it actually helps (0.76 -> 0.87 here)


def test_lambda_one_is_the_original_distance_ranking():
    rng = np.random.default_rng(7)
    vectors = unit_vectors(rng, 2 + 50, d=24)
    query, gallery = vectors[:2], vectors[2:]
    distances = k_reciprocal_rerank(query, gallery, lambda_value=1.0)
    cosine = query.astype(np.float64) @ gallery.astype(np.float64).T
    np.testing.assert_array_equal(rerank_order(distances), np.argsort(-cosine, axis=1, kind="stable"))
    # The original distance of the pool, each query row divided by its maximum over the pool.
    pool = vectors.astype(np.float64)
    squared = np.maximum(2.0 - 2.0 * query.astype(np.float64) @ pool.T, 0.0)
    np.testing.assert_allclose(
        distances, (2.0 - 2.0 * cosine) / squared.max(axis=1, keepdims=True), atol=1e-6
    )


def test_output_shape_dtype_and_range():
    rng = np.random.default_rng(3)
    vectors = unit_vectors(rng, 4 + 60)
    distances = k_reciprocal_rerank(vectors[:4], vectors[4:])
    assert distances.shape == (4, 60)
    assert distances.dtype == np.float32
    assert np.isfinite(distances).all()
    assert distances.min() >= 0.0 and distances.max() <= 1.0 + 1e-6
    order = rerank_order(distances)
    assert order.shape == (4, 60) and np.issubdtype(order.dtype, np.integer)
    assert all(sorted(row) == list(range(60)) for row in order.tolist())


def test_tiny_pools_and_large_k():
    rng = np.random.default_rng(4)
    vectors = unit_vectors(rng, 3)
    for gallery in (vectors[1:2], vectors[1:3]):
        distances = k_reciprocal_rerank(vectors[:1], gallery, k1=20, k2=6)
        assert distances.shape == (1, gallery.shape[0]) and np.isfinite(distances).all()
    # Beyond the pool, k1 only matters through round(k1 / 2), itself clipped: 50 and 100 agree on 10 vectors.
    pool = unit_vectors(rng, 10)
    np.testing.assert_array_equal(
        k_reciprocal_rerank(pool[:1], pool[1:], k1=50, k2=50),
        k_reciprocal_rerank(pool[:1], pool[1:], k1=100, k2=10),
    )


def test_duplicates_and_identical_vectors_stay_finite():
    rng = np.random.default_rng(5)
    base = unit_vectors(rng, 6)
    gallery = np.concatenate([base, base, base[:1]])  # exact duplicates, including of the query
    distances = k_reciprocal_rerank(base[:1], gallery, k1=3, k2=2)
    assert np.isfinite(distances).all()
    assert set(rerank_order(distances)[0, :3].tolist()) == {0, 6, 12}  # the query's own copies come first
    same = np.repeat(base[:1], 5, axis=0)
    assert np.isfinite(k_reciprocal_rerank(same[:1], same[1:])).all()


def test_inputs_are_not_modified_and_rows_are_normalised():
    rng = np.random.default_rng(6)
    vectors = unit_vectors(rng, 1 + 20).astype(np.float64) * 3.0  # not unit length: normalised inside
    query, gallery = vectors[:1].copy(), vectors[1:].copy()
    query.setflags(write=False)
    gallery.setflags(write=False)
    scaled = k_reciprocal_rerank(query, gallery)
    np.testing.assert_array_equal(query, vectors[:1])
    np.testing.assert_array_equal(gallery, vectors[1:])
    unit = k_reciprocal_rerank((vectors[:1] / 3.0).astype(np.float32), (vectors[1:] / 3.0).astype(np.float32))
    np.testing.assert_allclose(scaled, unit, atol=1e-6)


GOOD = np.eye(4, dtype=np.float32)


@pytest.mark.parametrize(
    ("query", "gallery", "params", "message"),
    [
        (GOOD[0], GOOD, {}, "query must be a non-empty 2-D"),
        (GOOD[:1], GOOD[:0], {}, "gallery must be a non-empty 2-D"),
        (GOOD[:1, :3], GOOD, {}, "dimensions differ"),
        (np.array([[np.nan, 0, 0, 1]]), GOOD, {}, "query contains NaN"),
        (GOOD[:1], np.array([[np.inf, 0, 0, 1]]), {}, "gallery contains NaN or infinite"),
        (GOOD[:1], np.zeros((2, 4)), {}, "gallery has all-zero rows"),
        (GOOD[:1].astype(np.complex64), GOOD, {}, "real numbers"),
        (GOOD[:1], GOOD, {"k1": 0}, "k1 must be >= 1"),
        (GOOD[:1], GOOD, {"k2": 0}, "k2 must be >= 1"),
        (GOOD[:1], GOOD, {"k1": 2.5}, "k1 must be an integer"),
        (GOOD[:1], GOOD, {"k2": True}, "k2 must be an integer"),
        (GOOD[:1], GOOD, {"lambda_value": -0.1}, r"lambda_value must be in \[0, 1\]"),
        (GOOD[:1], GOOD, {"lambda_value": 1.5}, r"lambda_value must be in \[0, 1\]"),
        (GOOD[:1], GOOD, {"lambda_value": float("nan")}, r"lambda_value must be in \[0, 1\]"),
        (GOOD[:1], GOOD, {"lambda_value": "0.3"}, "lambda_value must be a real number"),
    ],
)
def test_invalid_inputs_are_rejected(query, gallery, params, message):
    with pytest.raises(ValueError, match=message):
        k_reciprocal_rerank(query, gallery, **params)
