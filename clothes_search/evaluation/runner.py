"""Run the retrieval protocol through the product's own paths.

Gallery: the split's shop images, ingested from its ``catalog.jsonl`` (or, without one, as in
the real DeepFashion2, one item per shop image) by the real in-process
ingestion (feed → items → queue → detect, fuse, embed → Milvus + database) into a fresh index
(SQLite + embedded Milvus Lite under a work directory). In ground-truth-box mode detection is
skipped on both sides: the annotated boxes are cropped and embedded by the same pipeline and
written by the same :func:`db.indexing.index_items`.

Queries: the consumer images through :func:`search.similar.search_similar` (detection, embedding,
filtered ANN, re-ranking, database rows), with crops rather than items as results, as the protocol
scores gallery boxes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from clothes_search.evaluation.deepfashion2 import GarmentAnnotation, ImageAnnotation, read_split
from clothes_search.evaluation.official import evaluate_official
from clothes_search.evaluation.protocol import (
    QueryDetection,
    RetrievalScores,
    RetrievedCrop,
    default_category_match,
    evaluate,
)
from clothes_search.evaluation.report import ConfigResult
from clothes_search.services import Services
from clothes_search.settings import DetectorConfig, EmbedderConfig, Settings
from db import migrate
from db.filters import CatalogFilter
from db.index_versions import activate, live_version
from db.indexing import ItemCrops, NewCrop, index_items
from db.models import IndexVersion
from db.postprocessed_versions import PostprocessSpec, build_postprocessed_version
from ingestion.detection import Box, FusedDetection
from ingestion.feed import CatalogRow, parse_feed
from ingestion.images import load_image
from search.query_stages import Match, NoGarmentFoundError
from search.similar import SimilarQuery, search_similar
from workers.dispatch import InProcessDispatcher
from workers.submit import job_progress, submit_rows

RESULTS_PER_QUERY = 20
Progress = Callable[[str], None]


@dataclass(frozen=True)
class EvalConfig:
    """One row of an evaluation: the models, the query-side options and the index post-processing."""

    name: str
    description: str
    detectors: tuple[DetectorConfig, ...] | None = None  # None: the settings'
    embedders: tuple[EmbedderConfig, ...] | None = None
    rerank: Literal["none", "k_reciprocal"] = "k_reciprocal"
    query_expansion: bool = False
    postprocess: PostprocessSpec | None = None
    ground_truth_boxes: bool = False

    def index_key(self) -> str:
        """Configurations with the same key share one gallery index."""
        parts = [
            "gt" if self.ground_truth_boxes else "det",
            "" if self.detectors is None or self.ground_truth_boxes else repr(self.detectors),
            "" if self.embedders is None else repr(self.embedders),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


@dataclass
class _Index:
    services: Services
    base_version_id: int
    seconds: float
    failed: list[str] = field(default_factory=list)


class Evaluation:
    """The protocol on one split of a DeepFashion2-format data set, for several configurations."""

    def __init__(
        self, settings: Settings, split_dir: Path, work_dir: Path, progress: Progress = print
    ) -> None:
        self.settings = settings
        self.split_dir = split_dir
        self.work_dir = work_dir
        self.progress = progress
        annotations = read_split(split_dir)
        self.gallery = {a.image_id: a for a in annotations if a.source == "shop"}
        self.queries = [a for a in annotations if a.source == "user"]
        self.feed = split_dir / "catalog.jsonl"
        if self.feed.is_file():
            parsed = parse_feed(self.feed)
            if parsed.errors:
                first = parsed.errors[0].reason
                raise ValueError(f"{self.feed}: {parsed.error_count} bad rows, first: {first}")
            self.rows = [row for _, row in parsed.rows]
        else:  # real DeepFashion2 has no catalog: one item per shop image
            self.rows = gallery_feed(self.gallery.values())
        self.image_of_sku = {row.sku: Path(row.image_source).stem for row in self.rows}
        unknown = sorted(set(self.image_of_sku.values()) - set(self.gallery))
        if unknown:
            raise ValueError(f"{self.feed} names images without a shop annotation: {unknown[:5]}")
        self._indexes: dict[str, _Index] = {}
        self.category_match = default_category_match(dict(settings.categories.coarse))
        #: configuration name -> its detections and results (for the challenge's results file)
        self.detections: dict[str, dict[str, list[QueryDetection]]] = {}

    def close(self) -> None:
        for index in self._indexes.values():
            index.services.close()
        self._indexes.clear()

    def run(self, config: EvalConfig) -> ConfigResult:
        index = self._index(config)
        services = index.services
        seconds = {"ingest": index.seconds}
        notes: list[str] = []
        with self._postprocessed(index, config.postprocess, seconds, notes):
            started = time.perf_counter()
            detections = self._search_all(services, config)
            seconds["queries"] = time.perf_counter() - started
        scores = evaluate_official(self.queries, detections, self.gallery)
        lenient: RetrievalScores = evaluate(
            self.queries, detections, self.gallery, category_match=self.category_match
        )
        signature = services.pipeline.signature
        self.progress(
            f"{config.name}: top-1 {scores.topk_accuracy[1]:.3f}, top-20 {scores.topk_accuracy[20]:.3f} "
            f"(lenient {lenient.topk_accuracy[1]:.3f} / {lenient.topk_accuracy[20]:.3f}; "
            f"{seconds['queries']:.0f} s for {len(self.queries)} query images)"
        )
        self.detections[config.name] = detections
        return ConfigResult(
            name=config.name,
            description=" ".join([config.description, *notes]),
            signature=signature.hash,
            scores=scores,
            seconds=seconds,
            lenient=lenient,
        )

    def index_services(self, config: EvalConfig) -> Services:
        """The services (models, database, Milvus) of ``config``'s gallery index, built if new."""
        return self._index(config).services

    # -- the gallery ------------------------------------------------------------------------

    def _index(self, config: EvalConfig) -> _Index:
        key = config.index_key()
        if key in self._indexes:
            return self._indexes[key]
        root = self.work_dir / key
        if root.exists():
            raise ValueError(f"{root} exists: evaluate into a fresh work directory")
        root.mkdir(parents=True)
        update: dict[str, object] = {}
        if config.detectors is not None:
            update["detectors"] = list(config.detectors)
        if config.embedders is not None:
            update["embedders"] = list(config.embedders)
        settings = self.settings.model_copy(
            update={
                **update,
                "database": self.settings.database.model_copy(
                    update={"url": f"sqlite:///{root / 'catalog.db'}"}
                ),
                "milvus": self.settings.milvus.model_copy(update={"uri": str(root / "milvus.db")}),
                "queue": self.settings.queue.model_copy(update={"broker_url": None}),
            }
        )
        migrate.upgrade(settings.database)
        services = Services(settings)
        started = time.perf_counter()
        self.progress(f"{config.name}: indexing {len(self.rows)} shop images into {root}")
        failed = self._ingest_annotated(services) if config.ground_truth_boxes else self._ingest(services)
        index = _Index(services, services.target_version_id(), time.perf_counter() - started, failed)
        if failed:
            self.progress(f"  {len(failed)} gallery images failed: {failed[:3]}")
        self._indexes[key] = index
        return index

    def _ingest(self, services: Services) -> list[str]:
        """The real ingestion: submit the feed as a job, process it in-process, report failures."""
        services.target_version_id()
        submitted = submit_rows(
            services.database, services.store, self.rows, source=str(self.feed), created_by="eval",
            trusted=True, local_root=self.split_dir,
        )  # fmt: skip
        if submitted.job_id is None:
            return []
        InProcessDispatcher(services).submit(submitted.queued, submitted.job_id)
        progress = job_progress(services.database, submitted.job_id)
        assert progress is not None
        return [f"{sku}: {reason}" for sku, reason in progress.failures]

    def _ingest_annotated(self, services: Services) -> list[str]:
        """Ground-truth boxes instead of detection: same crops, embedding and index writes."""
        version_id = services.target_version_id()
        submit_rows(
            services.database, services.store, self.rows, source=str(self.feed), created_by="eval",
            trusted=True, local_root=self.split_dir,
        )  # fmt: skip
        pipeline = services.pipeline
        batch_size = self.settings.pipeline.batch_size
        for start in range(0, len(self.rows), batch_size):
            batch: list[ItemCrops] = []
            for row in self.rows[start : start + batch_size]:
                annotation = self.gallery[self.image_of_sku[row.sku]]
                loaded = load_image(annotation.image_path, services.settings.fetch)
                garments = [annotated_garment(item) for item in annotation.items]
                vectors = pipeline.embed_crops(pipeline.crop_garments(loaded.image, garments))
                crops = [
                    NewCrop(box=_xyxy(g.box), category=g.category, score=1.0, vector=v, detectors=g.detectors)
                    for g, v in zip(garments, vectors, strict=True)
                ]
                batch.append(ItemCrops(row.sku, loaded.content_sha256, crops))
            index_items(services.database, services.store, version_id, batch)
        services.store.flush(services.store.collection_name(pipeline.signature.hash))
        return []

    @contextmanager
    def _postprocessed(
        self, index: _Index, spec: PostprocessSpec | None, seconds: dict[str, float], notes: list[str]
    ) -> Iterator[None]:
        """Serve a DBA / PCA-whitened version of the index for the duration (then the base again)."""
        if spec is None:
            yield
            return
        services = index.services
        started = time.perf_counter()
        if spec.pca_dim is not None:
            vectors = services.store.count(services.store.collection_name(services.pipeline.signature.hash))
            spec = PostprocessSpec(**{**spec.to_dict(), "pca_dim": min(spec.pca_dim, vectors - 1)})
        report = build_postprocessed_version(services.database, services.store, index.base_version_id, spec)
        notes.append(f"[{spec.describe()}, over {report.vectors} indexed vectors]")
        with services.database.session() as session:
            activate(session, services.store, session.get(IndexVersion, report.version_id))
        seconds["postprocess"] = time.perf_counter() - started
        try:
            yield
        finally:
            with services.database.session() as session:
                base = session.get(IndexVersion, index.base_version_id)
                if live_version(session) is not base:
                    activate(session, services.store, base)

    # -- the queries ------------------------------------------------------------------------

    def _search_all(self, services: Services, config: EvalConfig) -> dict[str, list[QueryDetection]]:
        out: dict[str, list[QueryDetection]] = {}
        for number, annotation in enumerate(self.queries, 1):
            image = load_image(annotation.image_path, services.settings.fetch).image
            if config.ground_truth_boxes:
                out[annotation.image_id] = [
                    self._search(services, image, config, item) for item in annotation.items if item.style > 0
                ]
            else:
                out[annotation.image_id] = self._search_detected(services, image, config)
            if number % 25 == 0:
                self.progress(f"  {number}/{len(self.queries)} query images")
        return out

    def _query(self, config: EvalConfig, garment: Literal["all"] | Box) -> SimilarQuery:
        return SimilarQuery(
            k=RESULTS_PER_QUERY,
            filter=CatalogFilter(),
            garment=garment,
            rerank=config.rerank,
            query_expansion=config.query_expansion,
            collapse=False,
        )

    def _search_detected(
        self, services: Services, image: Image.Image, config: EvalConfig
    ) -> list[QueryDetection]:
        try:
            result = search_similar(services, image, self._query(config, "all"))
        except NoGarmentFoundError:
            return []
        detections: list[QueryDetection] = []
        for found in result.garments:
            detections.extend(hypotheses(found.garment, self._crops(found.matches)))
        return detections

    def _search(
        self, services: Services, image: Image.Image, config: EvalConfig, item: GarmentAnnotation
    ) -> QueryDetection:
        result = search_similar(services, image, self._query(config, Box(*item.box)))
        [garment] = result.garments
        return QueryDetection(
            box=item.box, category=item.category, score=1.0, results=self._crops(garment.matches)
        )

    def _crops(self, matches: Sequence[Match]) -> tuple[RetrievedCrop, ...]:
        return tuple(
            RetrievedCrop(gallery_image_id=self.image_of_sku[m.sku], box=tuple(m.crop_box)) for m in matches
        )


def hypotheses(garment: FusedDetection, results: tuple[RetrievedCrop, ...]) -> list[QueryDetection]:
    """The detections one garment stands for: its class, then each of its ``alternatives``, all on its
    box with its results, as a detector's output lists a box's classes in a challenge submission."""
    box = _xyxy(garment.box)
    return [
        QueryDetection(box=box, category=category, score=score, results=results)
        for category, score in ((garment.category, garment.score), *garment.alternatives)
    ]


def gallery_feed(shop_images: Iterable[ImageAnnotation]) -> list[CatalogRow]:
    """Catalog rows for a split without ``catalog.jsonl``: one item per shop image."""
    return [
        CatalogRow.model_validate(
            {
                "sku": f"shop-{a.image_id}",
                "image_path": str(a.image_path),
                "category": a.items[0].category if a.items else "",
                "attributes": {"pair_id": a.pair_id},
            }
        )
        for a in shop_images
    ]


def annotated_garment(item: GarmentAnnotation) -> FusedDetection:
    return FusedDetection(box=Box(*item.box), score=1.0, category=item.category, detectors=("ground_truth",))


def _xyxy(box: Box) -> tuple[float, float, float, float]:
    return (box.x1, box.y1, box.x2, box.y2)
