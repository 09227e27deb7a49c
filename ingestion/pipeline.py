"""The pipeline core: images -> m detectors -> WBF -> crops -> n embedders -> concatenation.

One :class:`Pipeline` per process; models load on first use (or :meth:`Pipeline.load`),
never at import time, so it is safe to build one before a fork and use it after.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from clothes_search.settings import Settings
from ingestion.categories import CategoryVocabulary
from ingestion.crops import crop_boxes
from ingestion.detection import Box, Detector, FusedDetection
from ingestion.detectors import build_detector
from ingestion.embedders import Embedder, RuntimeChoice, build_embedder
from ingestion.fusion import fuse_detections
from ingestion.signature import ModelSignature, concatenate_features

log = logging.getLogger(__name__)

FALLBACK_CATEGORY = "garment"


@dataclass(frozen=True)
class ImageAnalysis:
    """The garments found in one image and their concatenated vectors.

    ``vectors[i]`` (unit norm, the signature's dimension) belongs to ``garments[i]``.
    ``fallback_used`` is true when no detector found a garment and the whole image stood in.
    """

    size: tuple[int, int]
    garments: list[FusedDetection]
    vectors: np.ndarray
    fallback_used: bool


class Pipeline:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = torch.device(settings.pipeline.device)
        self.vocabulary = CategoryVocabulary(settings.categories)
        threads = settings.pipeline.torch_threads
        shared: dict[tuple[object, ...], object] = {}  # models that several detectors use
        runtime = RuntimeChoice(settings.pipeline.runtime, settings.models_dir / "onnx", threads)
        self.detectors: list[Detector] = [
            build_detector(
                c,
                self.vocabulary,
                models_dir=settings.models_dir,
                device=self.device,
                num_threads=threads,
                shared=shared,
                runtime=runtime,
            )
            for c in settings.detectors
        ]
        self.detector_weights = [c.weight for c in settings.detectors]
        self.embedders: list[Embedder] = [build_embedder(c, self.device, runtime) for c in settings.embedders]
        self.embedder_weights = [c.weight for c in settings.embedders]
        self._load_lock = threading.Lock()
        self._loaded = False
        self._signature: ModelSignature | None = None

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> Pipeline:
        """Load every model (idempotent, thread-safe). Errors name the model that failed."""
        with self._load_lock:
            if self._loaded:
                return self
            if self.settings.pipeline.torch_threads:
                torch.set_num_threads(self.settings.pipeline.torch_threads)
            for detector in self.detectors:
                detector.load()
            for embedder in self.embedders:
                embedder.load()
            self._loaded = True
        return self

    @property
    def loaded(self) -> bool:
        """Whether every model is loaded (:meth:`load` ran)."""
        return self._loaded

    @property
    def signature(self) -> ModelSignature:
        if self._signature is None:
            for embedder in self.embedders:  # the detectors play no part in the vectors' identity
                embedder.load()
            self._signature = ModelSignature(
                components=tuple(e.identity() for e in self.embedders), weights=tuple(self.embedder_weights)
            )
        return self._signature

    # -- stages -----------------------------------------------------------------------------
    def detect(self, images: Sequence[Image.Image]) -> list[list[FusedDetection]]:
        """Run the m detectors on a batch and fuse their boxes per image (fallback included)."""
        self.load()
        per_detector = [detector.detect(images) for detector in self.detectors]
        names = [d.name for d in self.detectors]
        fused_per_image: list[list[FusedDetection]] = []
        for index, image in enumerate(images):
            fused = fuse_detections(
                [outputs[index] for outputs in per_detector],
                names,
                self.detector_weights,
                image.size,
                self.vocabulary,
                self.settings.fusion,
            )[: self.settings.pipeline.max_crops_per_image]
            if not fused and self.settings.pipeline.fallback_to_whole_image:
                fused = [self._whole_image(image)]
            fused_per_image.append(fused)
        return fused_per_image

    @staticmethod
    def _whole_image(image: Image.Image) -> FusedDetection:
        box = Box(0.0, 0.0, float(image.width), float(image.height))
        return FusedDetection(box=box, score=0.0, category=FALLBACK_CATEGORY, detectors=(), is_fallback=True)

    def crop_garments(self, image: Image.Image, garments: Sequence[FusedDetection]) -> list[Image.Image]:
        """The garments' crops, each box grown by ``fusion.crop_padding``."""
        return crop_boxes(image, [g.box for g in garments], self.settings.fusion.crop_padding)

    def embed_crops(self, crops: Sequence[Image.Image], forward_batch_size: int | None = None) -> np.ndarray:
        """Concatenated, unit-norm vectors (len(crops), signature.dim) for RGB crops.

        ``forward_batch_size``: crops per forward pass (default ``pipeline.forward_batch_size``).
        """
        self.load()
        forward_batch = forward_batch_size or self.settings.pipeline.effective_forward_batch_size()
        features = [embedder.embed(crops, batch_size=forward_batch) for embedder in self.embedders]
        if not crops:
            return np.zeros((0, sum(f.shape[1] for f in features)), dtype=np.float32)
        return concatenate_features(features, self.embedder_weights)

    def analyse(
        self,
        images: Sequence[Image.Image],
        detections: Sequence[list[FusedDetection]] | None = None,
    ) -> list[ImageAnalysis]:
        """Detect, fuse, crop and embed a list of RGB images, ``pipeline.batch_size`` at a time.

        ``detections``: the images' garments found already (by :meth:`detect` of a pipeline with the
        same detectors and fusion), so that only the embedders run.
        """
        if detections is not None and len(detections) != len(images):
            raise ValueError(f"{len(detections)} detections for {len(images)} images")
        results: list[ImageAnalysis] = []
        batch = self.settings.pipeline.batch_size
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            if detections is None:
                detections_of_chunk = self.detect(chunk)
            else:
                detections_of_chunk = list(detections[start : start + batch])
            crops: list[Image.Image] = []
            for image, garments in zip(chunk, detections_of_chunk, strict=True):
                crops.extend(self.crop_garments(image, garments))
            vectors = self.embed_crops(crops)
            offset = 0
            for image, garments in zip(chunk, detections_of_chunk, strict=True):
                count = len(garments)
                results.append(
                    ImageAnalysis(
                        size=image.size,
                        garments=garments,
                        vectors=vectors[offset : offset + count],
                        fallback_used=any(g.is_fallback for g in garments),
                    )
                )
                offset += count
        return results
