"""The stages of a query, as plain functions that ``/similar`` and ``eval --tune`` both call.

choose garments → embed → the live index → ANN candidates → re-order (QE, k-reciprocal) → rows.

- :func:`choose_garments`: the query image's garments (detected, the largest one, or a given box);
- :func:`embed_garments`: their crops' concatenated vectors (the models' raw space);
- :func:`live_index`: the live index version, read once per request: the collection searched, the
  version whose crop rows the hits are joined with, its transform (a PCA-whitened version maps
  query vectors into its space) and its models (:func:`version_pipeline`: the whole request detects
  and embeds with them), all consistent with each other;
- :func:`find_candidates`: the ANN top-K' per garment with the merchandiser filter, with the
  candidates' stored vectors when re-ordering needs them;
- :func:`reorder_candidates`: pure numpy; QE re-scores by cosine, k-reciprocal scores are
  ``1 - re-ranked distance``;
- :func:`load_matches` / :func:`rank_matches`: the crops' rows from the database (hits without a
  row are dropped: the database is the truth), several crops of one item collapsed into its best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import defer

from clothes_search.errors import ClothesSearchError
from clothes_search.services import Services
from clothes_search.settings import SearchSettings
from db.filters import CatalogFilter
from db.index_versions import live_version
from db.models import Crop, IndexVersion, Item
from db.postprocessed_versions import VersionTransform, version_transform
from db.session import Database
from db.vectors import VectorStore
from ingestion.detection import Box, FusedDetection
from ingestion.pipeline import Pipeline
from search.query_expansion import average_query_expansion
from search.rerank import k_reciprocal_rerank

GarmentChoice = Literal["all", "largest"] | Box
Rerank = Literal["none", "k_reciprocal"]


class NoGarmentFoundError(ClothesSearchError):
    kind = "no_garment"


class IndexNotReadyError(ClothesSearchError):
    """No live index, or one built with other models than this server runs."""

    kind = "index_not_ready"


def choose_garments(pipeline: Pipeline, image: Image.Image, choice: GarmentChoice) -> list[FusedDetection]:
    """The garments to search for: all detected ones, the largest, or the given box (pixels, xyxy)."""
    if isinstance(choice, Box):
        box = choice.clipped(image.width, image.height)
        if box.width < 1 or box.height < 1:
            raise NoGarmentFoundError(f"the garment box {choice.as_list()} is outside the {image.size} image")
        return [FusedDetection(box=box, score=1.0, category="garment", detectors=("request",))]
    [garments] = pipeline.detect([image])
    if not garments:
        raise NoGarmentFoundError(
            "no garment found in the image (whole-image fallback is off: pipeline.fallback_to_whole_image)"
        )
    if choice == "largest":
        return [max(garments, key=lambda g: g.box.area)]
    return garments


def embed_garments(pipeline: Pipeline, image: Image.Image, garments: Sequence[FusedDetection]) -> np.ndarray:
    """``(len(garments), d)`` unit vectors of the garments' crops, all in one pass per model."""
    crops = pipeline.crop_garments(image, garments)
    return pipeline.embed_crops(crops, forward_batch_size=max(1, len(crops)))


@dataclass(frozen=True)
class LiveIndex:
    """The live index version as one request sees it."""

    collection: str  # the Milvus collection searched (not the alias: it may swap mid-request)
    rows_version_id: int  # the version whose crop rows the hits are joined with
    signature: str
    transform: VersionTransform | None  # a post-processed version's transform, None for a base one
    quantised: bool = False  # its vector index approximates the vectors (IVF_SQ8): re-score candidates
    models: dict[str, Any] = field(default_factory=dict)  # the version's recorded model set

    def query_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Raw query vectors in this version's space (whitened for a PCA-whitened version)."""
        return self.transform.queries(vectors) if self.transform is not None else vectors


QUANTISED_INDEXES = frozenset({"IVF_SQ8", "IVF_PQ", "HNSW_SQ", "HNSW_PQ"})


def live_index(database: Database, signature: str | None = None) -> LiveIndex:
    """The live version; with ``signature``, it must have been built with those models (the evaluation,
    which runs its own pipeline)."""
    with database.session() as session:
        # the whitening (a post-processed version's PCA, megabytes) is read only when not yet cached
        version = live_version(session, defer(IndexVersion.whitening), defer(IndexVersion.signature_spec))
        if version is None:
            raise IndexNotReadyError("no live index yet: ingest a catalog first")
        if signature is not None and version.signature != signature:
            raise IndexNotReadyError(
                f"the live index was built with models {version.signature} "
                f"({version.signature_description}); this server runs {signature}: "
                "re-index or configure the same models"
            )
        return LiveIndex(
            collection=version.collection_name,
            rows_version_id=version.rows_version_id,
            signature=version.signature,
            transform=version_transform(version),
            quantised=(version.index_params or {}).get("index_type") in QUANTISED_INDEXES,
            models=dict(version.models or {}),
        )


def version_pipeline(services: Services, index: LiveIndex) -> Pipeline:
    """The models of the version a request reads (loaded ahead by the API's version watch)."""
    try:
        return services.pipeline_for(index.signature, index.models)
    except ClothesSearchError as exc:
        raise IndexNotReadyError(str(exc)) from exc


@dataclass(frozen=True)
class ReorderParams:
    """How the candidates are re-ordered after the ANN search (see :func:`reorder_candidates`)."""

    rerank: Rerank = "none"
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    query_expansion: bool = False
    qe_top_n: int = 5
    rescore: bool = False  # a quantised index: re-score by exact cosine with the stored vectors

    @classmethod
    def from_settings(
        cls, settings: SearchSettings, rerank: Rerank, query_expansion: bool, rescore: bool = False
    ) -> ReorderParams:
        return cls(
            rerank=rerank,
            k1=settings.k1,
            k2=settings.k2,
            lambda_value=settings.lambda_value,
            query_expansion=query_expansion,
            qe_top_n=settings.qe_top_n,
            rescore=rescore,
        )

    @property
    def reorders(self) -> bool:
        """Whether the ANN order changes (and so the candidates' vectors are needed)."""
        return self.rerank == "k_reciprocal" or self.query_expansion or self.rescore


@dataclass(frozen=True)
class Candidates:
    """One garment's ANN hits, best first: crop ids, similarities, and (when fetched) their vectors."""

    ids: list[int]
    scores: np.ndarray  # (K,) float32
    vectors: np.ndarray | None = None  # (K, d) float32, row i belongs to ids[i]
    item_keys: list[str] | None = None  # the vector store's item key (sku) of each crop

    def keys_by_id(self) -> dict[int, str]:
        return {crop_id: key for crop_id, key in zip(self.ids, self.item_keys or (), strict=False) if key}


def find_candidates(
    store: VectorStore,
    index: LiveIndex,
    vectors: np.ndarray,
    *,
    limit: int,
    filter: CatalogFilter | None = None,
    with_vectors: bool = False,
) -> list[Candidates]:
    """The ``limit`` nearest crops of each query row (in the index's space) that match ``filter``,
    from one call to the vector store, with their item keys; with ``with_vectors`` they carry their
    stored vectors."""
    hits = store.search(index.collection, vectors, limit=limit, filter=filter, with_vectors=with_vectors)
    out: list[Candidates] = []
    for row in hits:
        ids = [h.id for h in row]
        scores = np.array([h.score for h in row], dtype=np.float32)
        keys = [h.item_key for h in row]
        matrix = None
        if with_vectors:
            dim = vectors.shape[1]
            matrix = np.stack([h.vector for h in row]) if row else np.zeros((0, dim), np.float32)
        out.append(Candidates(ids, scores, matrix, keys))
    return out


def reorder_candidates(
    probe: np.ndarray, candidates: Candidates, params: ReorderParams
) -> tuple[list[int], np.ndarray]:
    """The candidates re-ordered for the ``(d,)`` query vector ``probe``: ids and scores, best first.

    Without QE, re-ranking or re-scoring the ANN order and scores stand. Re-scoring (a quantised index)
    and QE score by exact cosine with the stored vectors (to the expanded query with QE);
    k-reciprocal scores are ``1 - distance`` (its distances are in ``[0, 1]``).
    """
    if not params.reorders or not candidates.ids:
        return list(candidates.ids), candidates.scores
    if candidates.vectors is None:
        raise ValueError("re-ordering needs the candidates' vectors: find_candidates(with_vectors=True)")
    gallery = candidates.vectors
    query = probe[None, :]
    if params.query_expansion:
        query = average_query_expansion(query, gallery, params.qe_top_n)
    if params.rerank == "k_reciprocal":
        scores = 1.0 - k_reciprocal_rerank(query, gallery, params.k1, params.k2, params.lambda_value)[0]
    else:
        scores = gallery @ query[0]
    order = np.argsort(-scores, kind="stable")
    return [candidates.ids[i] for i in order], scores[order].astype(np.float32)


@dataclass(frozen=True)
class Match:
    sku: str
    score: float
    crop_box: list[float]
    crop_category: str
    item: Item


@dataclass(frozen=True)
class CropRow:
    """What a result needs of a crop: its box and category, and its item."""

    box: list[float]
    category: str
    item: Item


def crop_rows(database: Database, rows_version_id: int, ids: Sequence[int]) -> dict[int, CropRow]:
    """The crop rows (and their items) of these ids in one database round trip; ids without a row are
    absent."""
    if not ids:
        return {}
    with database.session() as session:
        # by primary key only: with the version in the WHERE clause SQLite walks that version's index
        # (every crop of it) instead of looking the ids up; the version is checked here instead. Only
        # the crop columns a result shows are read (not its detectors' JSON nor timestamps).
        found = session.execute(
            select(Crop.id, Crop.index_version_id, Crop.x1, Crop.y1, Crop.x2, Crop.y2, Crop.category, Item)
            .join(Item, Crop.item_id == Item.id)
            .where(Crop.id.in_(list(dict.fromkeys(ids))))
        ).all()
        return {
            crop_id: CropRow([x1, y1, x2, y2], category, item)
            for crop_id, version_id, x1, y1, x2, y2, category, item in found
            if version_id == rows_version_id
        }


def rank_matches(
    ids: Sequence[int], scores: np.ndarray, rows: Mapping[int, CropRow], k: int, collapse: bool
) -> list[Match]:
    """The first ``k`` results in the given order: crops without a row (orphan vectors) skipped, and
    with ``collapse`` one result per item (its best crop)."""
    seen: set[int] = set()
    matches: list[Match] = []
    for crop_id, score in zip(ids, scores, strict=True):
        row = rows.get(crop_id)
        if row is None or (collapse and row.item.id in seen):
            continue
        seen.add(row.item.id)
        matches.append(Match(row.item.sku, float(score), row.box, row.category, row.item))
        if len(matches) == k:
            break
    return matches


def load_matches(
    database: Database,
    rows_version_id: int,
    rankings: Sequence[tuple[Sequence[int], np.ndarray]],
    k: int,
    collapse: bool,
    item_keys: Mapping[int, str] | None = None,
) -> list[list[Match]]:
    """Each garment's ranked ``(ids, scores)`` as matches (:func:`rank_matches`), every garment's rows
    read in one database round trip.

    With ``item_keys`` (crop id -> item key, as the vector store has them) only the crops that can be
    results are read: the first ``k`` (with ``collapse``, the first crop of each of the first ``k``
    items), not the whole candidate pool. Where one of them has no row (an orphan vector) and the
    garment falls short of ``k``, its other candidates are read in a second round trip.
    """
    leading = [_leading_ids(ids, item_keys, k, collapse) for ids, _ in rankings]
    rows = crop_rows(database, rows_version_id, [i for ids in leading for i in ids])
    out = []
    for (ids, scores), read in zip(rankings, leading, strict=True):
        matches = rank_matches(ids, scores, rows, k, collapse)
        if len(matches) < k and len(read) < len(ids):
            rows.update(crop_rows(database, rows_version_id, [i for i in ids if i not in rows]))
            matches = rank_matches(ids, scores, rows, k, collapse)
        out.append(matches)
    return out


def _leading_ids(
    ids: Sequence[int], item_keys: Mapping[int, str] | None, k: int, collapse: bool
) -> list[int]:
    """The ids whose rows make the first ``k`` results when every one of them has a row."""
    if item_keys is None:
        return list(ids)
    if not collapse:
        return list(ids[:k])
    seen: set[str] = set()
    out = []
    for crop_id in ids:
        key = item_keys.get(crop_id)
        if key is None:  # not known here: read them all
            return list(ids)
        if key not in seen:
            seen.add(key)
            out.append(crop_id)
            if len(out) == k:
                break
    return out
