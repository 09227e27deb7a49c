"""Post-processed index versions: database-side augmentation and PCA whitening as settings of a version.

A *base* index version holds the models' raw vectors of one signature. A post-processed version
is derived from it (``clothes-search index postprocess``) and holds, for the same crop ids, each
vector after:

1. **DBA** (``dba_top_n > 0``): the vector replaced by the (weighted) mean of itself and its
   ``dba_top_n`` nearest other raw vectors of the base version;
2. **PCA whitening** (``pca_dim``): fitted on (a sample of) the base version's raw vectors, stored
   with the version, applied to the augmented vectors here and to every query vector at search time.

The derived version shares its base's crop rows (:attr:`IndexVersion.rows_version_id`) and models,
so search, reconcile and deletion need no second set of rows. While it is not retired (or retired
but retained, see :mod:`db.index_versions`), ingestion into the base (:func:`db.indexing.index_items`)
writes each new vector to it too, augmented with its neighbours in the base collection at that
moment (the rows already indexed are not re-augmented: rebuild the version to refresh them). Build
order: the version row is committed (with its whitening) before the snapshot is read, so items
ingested during a build are written by ingestion itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from db.index_versions import retained_since
from db.models import IndexState, IndexVersion
from db.session import Database
from db.vector_transforms import DBA_WEIGHTS, PCAWhitening, augment_one, database_side_augmentation
from db.vectors import CropRecord, VectorStore

WRITE_CHUNK = 5000


@dataclass(frozen=True)
class PostprocessSpec:
    """What a post-processed version applies (stored as ``IndexVersion.postprocess``)."""

    dba_top_n: int = 0
    dba_weights: str = "uniform"
    pca_dim: int | None = None
    pca_eps: float = 1e-6
    pca_sample: int = 100_000
    pca_whiten: bool = True  # False: a plain PCA projection (a reduced index)

    def __post_init__(self) -> None:
        if self.dba_top_n < 0:
            raise ValueError(f"dba_top_n must be >= 0, got {self.dba_top_n}")
        if self.dba_weights not in DBA_WEIGHTS:
            raise ValueError(f"dba_weights must be one of {DBA_WEIGHTS}, got {self.dba_weights!r}")
        if self.pca_dim is not None and self.pca_dim < 1:
            raise ValueError(f"pca_dim must be >= 1, got {self.pca_dim}")
        if self.pca_eps < 0 or self.pca_sample < 2:
            raise ValueError("pca_eps must be >= 0 and pca_sample >= 2")
        if not self.enabled:
            raise ValueError("nothing to apply: set dba_top_n > 0 and/or pca_dim")

    @property
    def enabled(self) -> bool:
        return self.dba_top_n > 0 or self.pca_dim is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostprocessSpec:
        return cls(**data)

    def describe(self) -> str:
        parts = []
        if self.dba_top_n:
            parts.append(f"DBA top-{self.dba_top_n} {self.dba_weights}")
        if self.pca_dim is not None:
            parts.append(f"PCA {'whitening' if self.pca_whiten else 'projection'} to {self.pca_dim}-d")
        return " + ".join(parts)


@dataclass(frozen=True)
class VersionTransform:
    """The post-processing of one version: applied to query vectors and to newly indexed vectors."""

    spec: PostprocessSpec
    whitening: PCAWhitening | None

    def queries(self, vectors: np.ndarray) -> np.ndarray:
        """``(Q, d)`` raw query vectors → the version's space (whitened when it has a whitening)."""
        return self.whitening.transform(vectors) if self.whitening is not None else vectors

    def gallery(self, vectors: np.ndarray, neighbours: Sequence[np.ndarray]) -> np.ndarray:
        """``(G, d)`` raw vectors, each with its ``(n_i, d)`` raw neighbours best first → stored rows."""
        out = np.empty_like(vectors, dtype=np.float32)
        for row, (vector, near) in enumerate(zip(vectors, neighbours, strict=True)):
            out[row] = augment_one(vector, near[: self.spec.dba_top_n], self.spec.dba_weights)
        return self.whitening.transform(out) if self.whitening is not None else out


_TRANSFORMS: dict[str, VersionTransform] = {}  # by collection name: unique, unlike ids across databases
_TRANSFORMS_LOCK = threading.Lock()


def version_transform(version: IndexVersion) -> VersionTransform | None:
    """The version's post-processing (cached: a version never changes it); None for a base version."""
    if version.base_version_id is None:
        return None
    with _TRANSFORMS_LOCK:
        cached = _TRANSFORMS.get(version.collection_name)
        if cached is None:
            whitening = PCAWhitening.from_bytes(version.whitening) if version.whitening else None
            cached = VersionTransform(PostprocessSpec.from_dict(version.postprocess), whitening)
            _TRANSFORMS[version.collection_name] = cached
        return cached


def derived_versions(session: Session, base_version_id: int, retention_s: float = 0.0) -> list[IndexVersion]:
    """The post-processed versions of a base that ingestion keeps up to date: those not retired, and
    those retired less than ``retention_s`` ago (they may be made live again)."""
    retained = or_(
        IndexVersion.state != IndexState.RETIRED,
        and_(IndexVersion.retired_at.is_not(None), IndexVersion.retired_at > retained_since(retention_s)),
    )
    return list(
        session.scalars(select(IndexVersion).where(IndexVersion.base_version_id == base_version_id, retained))
    )


def write_to_derived(
    store: VectorStore, base: IndexVersion, derived: Sequence[IndexVersion], records: Sequence[CropRecord]
) -> None:
    """Write newly indexed raw ``records`` of ``base`` to its post-processed versions (same ids)."""
    if not records or not derived:
        return
    vectors = np.stack([np.asarray(r.vector, dtype=np.float32) for r in records])
    top_n = max(PostprocessSpec.from_dict(v.postprocess).dba_top_n for v in derived)
    neighbours = _raw_neighbours(store, base.collection_name, records, vectors, top_n)
    for version in derived:
        transform = version_transform(version)
        assert transform is not None
        rows = transform.gallery(vectors, neighbours)
        store.upsert(
            version.collection_name,
            [
                CropRecord(r.id, row, r.item_key, r.crop_category, r.fields, r.written_at)
                for r, row in zip(records, rows, strict=True)
            ],
        )


def _raw_neighbours(
    store: VectorStore, collection: str, records: Sequence[CropRecord], vectors: np.ndarray, top_n: int
) -> list[np.ndarray]:
    """Each vector's ``top_n`` most similar other raw vectors in the base collection, best first."""
    empty = np.zeros((0, vectors.shape[1]), dtype=np.float32)
    if top_n == 0:
        return [empty] * len(records)
    hits = store.search(collection, vectors, limit=top_n + 1, with_vectors=True)
    out = []
    for record, row in zip(records, hits, strict=True):
        near = [h.vector for h in row if h.id != record.id and h.vector is not None][:top_n]
        out.append(np.stack(near) if near else empty)
    return out


@dataclass
class BuildReport:
    collection: str
    version_id: int
    vectors: int
    dimension: int
    seconds: dict[str, float]


def build_postprocessed_version(
    database: Database,
    store: VectorStore,
    base_version_id: int,
    spec: PostprocessSpec,
    *,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _message: None,
) -> BuildReport:
    """Derive a post-processed version of ``base_version_id`` (state ``building``; activate it to serve).

    Reads the base collection twice: a sample to fit the whitening, then every vector for DBA
    (``O(N²·d)``, blockwise in numpy) and the write. Memory: all raw vectors (``N × d`` float32).
    """
    seconds: dict[str, float] = {}
    with database.session() as session:
        base = session.get(IndexVersion, base_version_id)
        if base is None:
            raise ValueError(f"no index version {base_version_id}")
        if base.base_version_id is not None:
            raise ValueError(f"{base.collection_name} is itself post-processed: derive from its base")
        base_collection, base_dimension = base.collection_name, base.dimension
        base_fields = {
            "signature": base.signature,
            "signature_description": base.signature_description,
            "signature_spec": base.signature_spec,
            "index_params": base.index_params,
            "models": base.models,
        }
    store.flush(base_collection)
    started = time.perf_counter()
    whitening = None
    if spec.pca_dim is not None:
        progress(f"fitting PCA whitening on up to {spec.pca_sample} vectors of {base_collection}")
        sample = _sample_vectors(store, base_collection, spec.pca_sample, seed)
        if sample.shape[0] <= spec.pca_dim:
            raise ValueError(
                f"PCA whitening to {spec.pca_dim}-d needs more than {spec.pca_dim} indexed vectors; "
                f"{base_collection} has {sample.shape[0]}"
            )
        whitening = PCAWhitening.fit(sample, dim=spec.pca_dim, eps=spec.pca_eps, whiten=spec.pca_whiten)
    seconds["fit_pca"] = time.perf_counter() - started
    dimension = spec.pca_dim if spec.pca_dim is not None else base_dimension
    collection = f"{base_collection}_pp{uuid.uuid4().hex[:8]}"
    store.ensure_collection(collection, dimension)
    with database.session() as session:
        version = IndexVersion(
            collection_name=collection,
            dimension=dimension,
            state=IndexState.BUILDING,
            base_version_id=base_version_id,
            postprocess=spec.to_dict(),
            whitening=whitening.to_bytes() if whitening is not None else None,
            **base_fields,
        )
        session.add(version)
        session.flush()
        version_id = version.id
    # from here on, ingestion into the base also writes to this version
    started = time.perf_counter()
    records = [r for batch in store.iter_records(base_collection) for r in batch]
    seconds["read"] = time.perf_counter() - started
    progress(f"{len(records)} vectors read; applying {spec.describe()}")
    started = time.perf_counter()
    rows = np.stack([r.vector for r in records]) if records else np.zeros((0, base_dimension), np.float32)
    if spec.dba_top_n and len(records):
        rows = database_side_augmentation(rows, spec.dba_top_n, spec.dba_weights)
    if whitening is not None and len(records):
        rows = whitening.transform(rows)
    seconds["transform"] = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(records), WRITE_CHUNK):
        chunk = records[start : start + WRITE_CHUNK]
        store.upsert(
            collection,
            [
                CropRecord(r.id, row, r.item_key, r.crop_category, r.fields, r.written_at)
                for r, row in zip(chunk, rows[start : start + WRITE_CHUNK], strict=True)
            ],
        )
        progress(f"written {min(start + WRITE_CHUNK, len(records))}/{len(records)}")
    store.flush(collection)
    seconds["write"] = time.perf_counter() - started
    return BuildReport(collection, version_id, len(records), dimension, seconds)


def _sample_vectors(store: VectorStore, collection: str, size: int, seed: int) -> np.ndarray:
    """A uniform random sample of ``size`` raw vectors (reservoir sampling over one pass)."""
    rng = np.random.default_rng(seed)
    sample: list[np.ndarray] = []
    seen = 0
    for batch in store.iter_records(collection):
        for record in batch:
            if len(sample) < size:
                sample.append(record.vector)
            else:
                slot = int(rng.integers(0, seen + 1))
                if slot < size:
                    sample[slot] = record.vector
            seen += 1
    return np.stack(sample) if sample else np.zeros((0, 1), dtype=np.float32)
