"""Feature concatenation across the n embedders, and the model signature of the result.

Every stored vector carries the signature's hash, so an index built with one set of models
is never searched with vectors of another, and re-indexing with new models is possible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ingestion.embedders.base import EmbedderIdentity

SIGNATURE_VERSION = 1  # bump when concatenation itself changes


def l2_normalise(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of a (N, d) array; zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, eps)


def concatenate_features(features: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Per-model L2 norm, per-model weight, concatenation, final L2 norm.

    Args:
        features: n arrays of shape (N, d_i), one per embedder, rows aligned.
        weights: n positive multipliers (a model's share of the final cosine similarity
            grows with the square of its weight).
    Returns:
        float32 (N, sum(d_i)) with unit-norm rows.
    """
    if len(features) != len(weights) or not features:
        raise ValueError(f"{len(features)} feature blocks for {len(weights)} weights")
    rows = {f.shape[0] for f in features}
    if len(rows) != 1:
        raise ValueError(f"feature blocks disagree on the number of rows: {sorted(rows)}")
    blocks = [
        l2_normalise(np.asarray(f, dtype=np.float32)) * np.float32(w)
        for f, w in zip(features, weights, strict=True)
    ]
    return l2_normalise(np.concatenate(blocks, axis=1)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class ModelSignature:
    """The ordered embedders (backend, model, weights, dim, preprocessing) and their weights."""

    components: tuple[EmbedderIdentity, ...]
    weights: tuple[float, ...]

    @property
    def dim(self) -> int:
        return sum(c.dim for c in self.components)

    def to_dict(self) -> dict[str, object]:
        return {
            "version": SIGNATURE_VERSION,
            "concatenation": "l2-per-model, weighted, concatenated, l2",
            "components": [
                {**asdict(c), "weight": w} for c, w in zip(self.components, self.weights, strict=True)
            ],
        }

    @property
    def hash(self) -> str:
        """A short, stable id: 12 hex digits of the SHA-256 of the canonical JSON."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def description(self) -> str:
        parts = [
            f"{c.backend}:{c.model}@{c.weights.removeprefix('sha256:')[:8]}[{c.dim}]"
            + (f"x{w:g}" if w != 1 else "")
            for c, w in zip(self.components, self.weights, strict=True)
        ]
        return " + ".join(parts) + f" -> {self.dim}-d"
