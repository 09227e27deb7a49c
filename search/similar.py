"""The ``/similar`` service: query image → garments → ANN in Milvus → re-ranking → catalog rows.

The live version is read first; its models detect and embed (an index version switch between two
requests changes the models, never inside one). Per garment of the query image, the stages of
:mod:`search.query_stages`: its vector (whitened
when the live index version is PCA-whitened, see :mod:`db.postprocessed_versions`), Milvus top-K'
(``search.rerank_depth``) with the merchandiser filter, optional average query expansion,
optional k-reciprocal re-ranking on the query and the candidates' stored vectors, then the crops'
rows from the database, several crops of one item collapsed into one result (its best), top-k
items with their metadata in rank order. The live version is read once per request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from PIL import Image

from clothes_search.services import Services
from db.filters import CatalogFilter
from ingestion.detection import Box, FusedDetection
from search.query_stages import (
    GarmentChoice,
    Match,
    ReorderParams,
    Rerank,
    choose_garments,
    embed_garments,
    find_candidates,
    live_index,
    load_matches,
    reorder_candidates,
    version_pipeline,
)


@dataclass(frozen=True)
class SimilarQuery:
    k: int
    filter: CatalogFilter
    garment: GarmentChoice = "all"
    rerank: Rerank = "k_reciprocal"
    query_expansion: bool = False
    collapse: bool = True  # one result per item (its best crop); False: crops (the evaluation protocol)


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


def search_similar(
    services: Services,
    image: Image.Image,
    query: SimilarQuery,
    timings: dict[str, float] | None = None,
    scale: float = 1.0,
) -> SimilarResult:
    """Run the whole search for one query image (see the module docstring).

    ``scale``: the original's pixels per pixel of ``image`` (a reduced decode): a requested garment
    box is given, and the garments' boxes are answered, in the original's pixels.
    """
    settings = services.settings.search
    watch = _Stopwatch(timings if timings is not None else {})
    with watch.stage("db"):
        index = live_index(services.database)  # once: its collection, rows and models serve the request
    pipeline = version_pipeline(services, index)
    choice = query.garment.scaled(1 / scale) if isinstance(query.garment, Box) else query.garment
    with watch.stage("detect"):
        garments = choose_garments(pipeline, image, choice)
    with watch.stage("embed"):
        vectors = index.query_vectors(embed_garments(pipeline, image, garments))
    params = ReorderParams.from_settings(settings, query.rerank, query.query_expansion, index.quantised)
    depth = settings.rerank_depth if params.reorders else query.k * settings.overfetch
    with watch.stage("ann"):
        candidates = find_candidates(
            services.store,
            index,
            vectors,
            limit=max(depth, query.k),
            filter=query.filter,
            with_vectors=params.reorders,
        )
    rankings = []
    with watch.stage("rerank"):
        for vector, found in zip(vectors, candidates, strict=True):
            rankings.append(reorder_candidates(vector, found, params))
    if not params.reorders:
        watch.timings.pop("rerank", None)
    with watch.stage("db"):
        keys = {crop_id: key for found in candidates for crop_id, key in found.keys_by_id().items()}
        matches = load_matches(
            services.database, index.rows_version_id, rankings, query.k, query.collapse, keys
        )
    return SimilarResult(
        signature=index.signature,
        garments=[
            GarmentMatches(replace(g, box=g.box.scaled(scale)) if scale != 1.0 else g, m)
            for g, m in zip(garments, matches, strict=True)
        ],
        timings_ms=watch.timings,
    )
