"""Small vector fixtures for the post-processing tests: unit rows, clusters, read-only copies."""

from __future__ import annotations

import numpy as np


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_unit(rng, n, d=16):
    return unit(rng.normal(size=(n, d))).astype(np.float32)


def frozen(x):
    """A read-only copy: any in-place write by the code under test raises."""
    y = np.array(x, copy=True)
    y.setflags(write=False)
    return y


def clusters(seed, n_clusters=4, per_cluster=6, d=32, noise=0.3):
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_clusters, d)))
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    vectors = centres[labels] + noise * rng.normal(size=(labels.size, d)) / np.sqrt(d)
    return unit(vectors).astype(np.float32), labels


def mean_cosines(vectors, labels):
    """(mean intra-cluster cosine between distinct items, max inter-cluster cosine, min intra-cluster)."""
    cos = unit(vectors) @ unit(vectors).T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(labels.size, dtype=bool)
    return cos[same & off_diagonal].mean(), cos[~same].max(), cos[same & off_diagonal].min()
