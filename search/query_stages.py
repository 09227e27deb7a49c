"""The stages of a query, as plain functions that ``/similar`` and ``eval --tune`` both call.

choose garments → embed → the live index → ANN candidates → re-order (QE, k-reciprocal) → rows.

- :func:`choose_garments`: the query image's garments (detected, the largest one, or a given box);
- :func:`embed_garments`: their crops' concatenated vectors (the models' raw space);
- :func:`live_index`: the live index version, read once per request: the collection searched, the
  version whose crop rows the hits are joined with and its transform (a PCA-whitened version maps
  query vectors into its space), all consistent with each other;
- :func:`find_candidates`: the ANN top-K' per garment with the merchandiser filter, with the
  candidates' stored vectors when re-ordering needs them;
- :func:`reorder_candidates`: pure numpy; QE re-scores by cosine, k-reciprocal scores are
  ``1 - re-ranked distance``;
- :func:`load_matches` / :func:`rank_matches`: the crops' rows from the database (hits without a
  row are dropped: the database is the truth), several crops of one item collapsed into its best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from sqlalchemy import select

from clothes_search.errors import ClothesSearchError
from clothes_search.settings import SearchSettings
from db.filters import CatalogFilter
from db.index_versions import live_version
from db.models import Crop, Item
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
    return pipeline.embed_crops(pipeline.crop_garments(image, garments))


@dataclass(frozen=True)
class LiveIndex:
    """The live index version as one request sees it."""

    collection: str  # the Milvus collection searched (not the alias: it may swap mid-request)
    rows_version_id: int  # the version whose crop rows the hits are joined with
    signature: str
    transform: VersionTransform | None  # a post-processed version's transform, None for a base one

    def query_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Raw query vectors in this version's space (whitened for a PCA-whitened version)."""
        return self.transform.queries(vectors) if self.transform is not None else vectors


def live_index(database: Database, signature: str) -> LiveIndex:
    """The live version, which must have been built with the models of ``signature``."""
    with database.session() as session:
        version = live_version(session)
        if version is None:
            raise IndexNotReadyError("no live index yet: ingest a catalog first")
        if version.signature != signature:
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
        )


@dataclass(frozen=True)
class ReorderParams:
    """How the candidates are re-ordered after the ANN search (see :func:`reorder_candidates`)."""

    rerank: Rerank = "none"
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    query_expansion: bool = False
    qe_top_n: int = 5

    @classmethod
    def from_settings(cls, settings: SearchSettings, rerank: Rerank, query_expansion: bool) -> ReorderParams:
        return cls(
            rerank=rerank,
            k1=settings.k1,
            k2=settings.k2,
            lambda_value=settings.lambda_value,
            query_expansion=query_expansion,
            qe_top_n=settings.qe_top_n,
        )

    @property
    def reorders(self) -> bool:
        """Whether the ANN order changes (and so the candidates' vectors are needed)."""
        return self.rerank == "k_reciprocal" or self.query_expansion


@dataclass(frozen=True)
class Candidates:
    """One garment's ANN hits, best first: crop ids, similarities, and (when fetched) their vectors."""

    ids: list[int]
    scores: np.ndarray  # (K,) float32
    vectors: np.ndarray | None = None  # (K, d) float32, row i belongs to ids[i]


def find_candidates(
    store: VectorStore,
    index: LiveIndex,
    vectors: np.ndarray,
    *,
    limit: int,
    filter: CatalogFilter | None = None,
    with_vectors: bool = False,
) -> list[Candidates]:
    """The ``limit`` nearest crops of each query row (in the index's space) that match ``filter``.

    With ``with_vectors`` each garment's candidates carry their stored vectors; a candidate whose
    vector vanished since the search (deleted) is dropped.
    """
    hits = store.search(index.collection, vectors, limit=limit, filter=filter)
    out: list[Candidates] = []
    stored = store.get_vectors(index.collection, [h.id for row in hits for h in row]) if with_vectors else {}
    for row in hits:
        if not with_vectors:
            out.append(Candidates([h.id for h in row], np.array([h.score for h in row], dtype=np.float32)))
            continue
        kept = [h for h in row if h.id in stored]
        matrix = (
            np.stack([stored[h.id] for h in kept]) if kept else np.zeros((0, vectors.shape[1]), np.float32)
        )
        scores = np.array([h.score for h in kept], dtype=np.float32)
        out.append(Candidates([h.id for h in kept], scores, matrix))
    return out


def reorder_candidates(
    probe: np.ndarray, candidates: Candidates, params: ReorderParams
) -> tuple[list[int], np.ndarray]:
    """The candidates re-ordered for the ``(d,)`` query vector ``probe``: ids and scores, best first.

    Without QE or re-ranking the ANN order and scores stand. QE re-scores by cosine to the expanded
    query; k-reciprocal scores are ``1 - distance`` (its distances are in ``[0, 1]``).
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
        found = session.execute(
            select(Crop, Item)
            .join(Item, Crop.item_id == Item.id)
            .where(Crop.id.in_(list(dict.fromkeys(ids))), Crop.index_version_id == rows_version_id)
        ).all()
        return {crop.id: CropRow(crop.box, crop.category, item) for crop, item in found}


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
) -> list[list[Match]]:
    """Each garment's ranked ``(ids, scores)`` as matches (:func:`rank_matches`), every garment's rows
    read in one database round trip."""
    rows = crop_rows(database, rows_version_id, [i for ids, _ in rankings for i in ids])
    return [rank_matches(ids, scores, rows, k, collapse) for ids, scores in rankings]
