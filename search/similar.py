"""The ``/similar`` service: query image → garments → ANN in Milvus → re-ranking → catalog rows.

Per garment of the query image (its vector whitened when the live index version is PCA-whitened,
see :mod:`db.postprocessed_versions`): Milvus top-K' (``search.rerank_depth``) with the
merchandiser filter, optional average query expansion, optional k-reciprocal re-ranking on
the query and the candidates' stored vectors, then the crops' rows from the database (hits
without a row are dropped: the database is the truth), several crops of one item collapsed
into one result (its best), top-k items with their metadata in rank order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image
from sqlalchemy import select

from clothes_search.errors import ClothesSearchError
from db.filters import CatalogFilter
from db.index_versions import live_version
from db.models import Crop, Item
from db.postprocessed_versions import version_transform
from ingestion.detection import Box, FusedDetection
from ingestion.postprocess import average_query_expansion
from search.rerank import k_reciprocal_rerank
from workers.resources import WorkerResources

GarmentChoice = Literal["all", "largest"] | Box


class NoGarmentFoundError(ClothesSearchError):
    kind = "no_garment"


class IndexNotReadyError(ClothesSearchError):
    """No live index, or one built with other models than this server runs."""

    kind = "index_not_ready"


@dataclass(frozen=True)
class SimilarQuery:
    k: int
    filter: CatalogFilter
    garment: GarmentChoice = "all"
    rerank: Literal["none", "k_reciprocal"] = "k_reciprocal"
    query_expansion: bool = False
    collapse: bool = True  # one result per item (its best crop); False: crops (the evaluation protocol)


@dataclass(frozen=True)
class Match:
    sku: str
    score: float
    crop_box: list[float]
    crop_category: str
    item: Item


@dataclass
class GarmentMatches:
    garment: FusedDetection
    matches: list[Match] = field(default_factory=list)


@dataclass
class SimilarResult:
    signature: str
    garments: list[GarmentMatches]
    timings_ms: dict[str, float] = field(default_factory=dict)


class _Stopwatch:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - start) * 1000


def choose_garments(
    resources: WorkerResources, image: Image.Image, choice: GarmentChoice
) -> list[FusedDetection]:
    if isinstance(choice, Box):
        box = choice.clipped(image.width, image.height)
        if box.width < 1 or box.height < 1:
            raise NoGarmentFoundError(f"the garment box {choice.as_list()} is outside the {image.size} image")
        return [FusedDetection(box=box, score=1.0, category="garment", detectors=("request",))]
    [garments] = resources.pipeline.detect([image])
    if not garments:
        raise NoGarmentFoundError(
            "no garment found in the image (whole-image fallback is off: pipeline.fallback_to_whole_image)"
        )
    if choice == "largest":
        return [max(garments, key=lambda g: g.box.area)]
    return garments


def search_similar(
    resources: WorkerResources,
    image: Image.Image,
    query: SimilarQuery,
    timings: dict[str, float] | None = None,
) -> SimilarResult:
    """Run the whole search for one query image (see the module docstring)."""
    settings = resources.settings.search
    watch = _Stopwatch(timings if timings is not None else {})
    pipeline = resources.pipeline
    with watch.stage("detect"):
        garments = choose_garments(resources, image, query.garment)
    with watch.stage("embed"):
        vectors = pipeline.embed_crops(pipeline.crop_garments(image, garments))
    with watch.stage("db"), resources.database.session() as session:
        version = live_version(session)
        if version is None:
            raise IndexNotReadyError("no live index yet: ingest a catalog first")
        if version.signature != pipeline.signature.hash:
            raise IndexNotReadyError(
                f"the live index was built with models {version.signature} "
                f"({version.signature_description}); this server runs {pipeline.signature.hash}: "
                "re-index or configure the same models"
            )
        collection, rows_version_id = version.collection_name, version.rows_version_id
        transform = version_transform(version)
    if transform is not None:  # a PCA-whitened version: queries go to its space too
        with watch.stage("embed"):
            vectors = transform.queries(vectors)
    rerank = query.rerank == "k_reciprocal"
    depth = settings.rerank_depth if (rerank or query.query_expansion) else query.k * settings.overfetch
    store = resources.store
    with watch.stage("ann"):
        hits = store.search(
            store.settings.live_alias, vectors, limit=max(depth, query.k), filter=query.filter
        )
    results = []
    for garment, vector, garment_hits in zip(garments, vectors, hits, strict=True):
        ids = [h.id for h in garment_hits]
        scores = np.array([h.score for h in garment_hits], dtype=np.float32)
        if ids and (rerank or query.query_expansion):
            with watch.stage("rerank"):
                ids, scores = _post_process(resources, collection, vector, ids, query)
        with watch.stage("db"):
            matches = _matches(resources, rows_version_id, ids, scores, query.k, query.collapse)
        results.append(GarmentMatches(garment=garment, matches=matches))
    return SimilarResult(signature=pipeline.signature.hash, garments=results, timings_ms=watch.timings)


def _post_process(
    resources: WorkerResources, collection: str, query_vector: np.ndarray, ids: list[int], query: SimilarQuery
) -> tuple[list[int], np.ndarray]:
    """Re-order the candidates: QE re-scores by cosine; k-reciprocal scores are 1 - re-ranked distance."""
    settings = resources.settings.search
    stored = resources.store.get_vectors(collection, ids)
    ids = [i for i in ids if i in stored]  # a vector deleted since the search
    if not ids:
        return [], np.zeros(0, dtype=np.float32)
    gallery = np.stack([stored[i] for i in ids])
    probe = query_vector[None, :]
    if query.query_expansion:
        probe = average_query_expansion(probe, gallery, settings.qe_top_n)
    if query.rerank == "k_reciprocal":
        distance = k_reciprocal_rerank(probe, gallery, settings.k1, settings.k2, settings.lambda_value)[0]
        scores = 1.0 - distance
    else:
        scores = gallery @ probe[0]
    order = np.argsort(-scores, kind="stable")
    return [ids[i] for i in order], scores[order].astype(np.float32)


def _matches(
    resources: WorkerResources, version_id: int, ids: list[int], scores: np.ndarray, k: int, collapse: bool
) -> list[Match]:
    if not ids:
        return []
    with resources.database.session() as session:
        rows = {
            crop.id: crop
            for crop in session.scalars(
                select(Crop).where(Crop.id.in_(ids), Crop.index_version_id == version_id)
            )
        }
        item_ids = {c.item_id for c in rows.values()}
        items = {item.id: item for item in session.scalars(select(Item).where(Item.id.in_(item_ids)))}
        seen: set[int] = set()
        matches: list[Match] = []
        for crop_id, score in zip(ids, scores, strict=True):
            crop = rows.get(crop_id)
            if crop is None or (collapse and crop.item_id in seen):  # no row: an orphan vector
                continue
            seen.add(crop.item_id)
            item = items[crop.item_id]
            matches.append(Match(item.sku, float(score), crop.box, crop.category, item))
            if len(matches) == k:
                break
        return matches
