"""Average query expansion: its definition, properties and malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from unit_vectors import frozen, random_unit, unit

from search import query_expansion
from search.query_expansion import average_query_expansion

# --- average query expansion ------------------------------------------------------------------------------


def loop_aqe(query, gallery, top_n):
    out = []
    for q in unit(query):
        sims = [float(np.dot(q, g)) for g in unit(gallery)]
        best = sorted(range(len(sims)), key=lambda j: (-sims[j], j))[:top_n]
        out.append(unit(q + sum((unit(gallery[j]) for j in best), np.zeros_like(q))))
    return np.array(out)


def test_aqe_with_top_n_zero_returns_the_normalised_query():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(3, 16)) * 5.0
    out = average_query_expansion(query, random_unit(rng, 10), top_n=0)
    assert out.dtype == np.float32 and out.shape == (3, 16)
    np.testing.assert_allclose(out, unit(query), atol=1e-6)


@pytest.mark.parametrize("top_n", [1, 3, 10, 50])
def test_aqe_is_the_normalised_mean_of_query_and_top_neighbours(top_n):
    rng = np.random.default_rng(top_n)
    query, gallery = random_unit(rng, 4), rng.normal(size=(30, 16)).astype(np.float32)
    out = average_query_expansion(frozen(query), frozen(gallery), top_n)
    assert out.dtype == np.float32 and out.shape == query.shape
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out, loop_aqe(query, gallery, min(top_n, 30)), atol=1e-6)


def test_aqe_with_an_exact_duplicate_and_top_n_one_returns_the_query():
    rng = np.random.default_rng(1)
    query = random_unit(rng, 1)
    gallery = np.concatenate([random_unit(rng, 9), query, random_unit(rng, 5)])
    np.testing.assert_allclose(average_query_expansion(query, gallery, 1), query, atol=1e-6)


def test_aqe_moves_the_query_towards_its_neighbours():
    rng = np.random.default_rng(2)
    query, gallery = random_unit(rng, 5), random_unit(rng, 40)
    out = average_query_expansion(query, gallery, 3)
    for q, expanded in zip(query, out, strict=True):
        top = np.argsort(-(gallery @ q), kind="stable")[:3]
        centre = unit(gallery[top].mean(axis=0))
        assert float(expanded @ centre) > float(q @ centre)


def test_aqe_with_an_empty_gallery_and_in_blocks(monkeypatch):
    rng = np.random.default_rng(3)
    query, gallery = random_unit(rng, 10), random_unit(rng, 25)
    np.testing.assert_allclose(average_query_expansion(query, gallery[:0], 5), query, atol=1e-6)
    whole = average_query_expansion(query, gallery, 4)
    monkeypatch.setattr(query_expansion, "_BLOCK_ROWS", 3)
    np.testing.assert_allclose(average_query_expansion(query, gallery, 4), whole, atol=1e-7)


@pytest.mark.parametrize(
    ("query", "gallery", "top_n", "message"),
    [
        (np.ones(4), np.ones((2, 4)), 1, "query must be a non-empty 2-D"),
        (np.ones((1, 4)), np.ones((2, 3)), 1, "dimensions differ"),
        (np.ones((1, 4)), np.full((2, 4), np.nan), 1, "gallery contains NaN"),
        (np.zeros((1, 4)), np.ones((2, 4)), 1, "query has all-zero rows"),
        (np.ones((1, 4)), np.ones((2, 4)), -1, "top_n must be >= 0"),
        (np.ones((1, 4)), np.ones((2, 4)), 1.5, "top_n must be an integer"),
    ],
)
def test_aqe_rejects_invalid_input(query, gallery, top_n, message):
    with pytest.raises(ValueError, match=message):
        average_query_expansion(query, gallery, top_n)
