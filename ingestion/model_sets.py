"""The model set of an index version: what turns a catalog image into that version's crops and vectors.

An index version is one model signature (the embedders: :mod:`ingestion.signature`); its crops also
depend on the detectors, the box fusion and the pipeline's crop options. All of these are recorded
with the version (``IndexVersion.models``, JSON) when it is created, so that any process — an API
process about to serve it, a worker writing to it, ``index build`` filling it — can load exactly those
models, whatever its own configuration says. Local model files are recorded by absolute path; a file
that changed since gives another signature, which the loader refuses (:class:`ModelSetMismatchError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clothes_search.settings import DetectorConfig, EmbedderConfig, FusionSettings, Settings
from ingestion.errors import ModelConfigError

MODEL_SET_FORMAT = 1


class ModelSetMismatchError(ModelConfigError):
    """A recorded model set no longer gives the version's signature (its weights changed)."""

    kind = "model_set_mismatch"


@dataclass(frozen=True)
class ModelSet:
    """Detectors, fusion, embedders and crop options of one index version."""

    detectors: tuple[DetectorConfig, ...]
    embedders: tuple[EmbedderConfig, ...]
    fusion: FusionSettings
    fallback_to_whole_image: bool
    max_crops_per_image: int

    @classmethod
    def of(cls, settings: Settings) -> ModelSet:
        """The model set a process configured with ``settings`` runs."""
        return cls(
            detectors=tuple(settings.detectors),
            embedders=tuple(settings.embedders),
            fusion=settings.fusion,
            fallback_to_whole_image=settings.pipeline.fallback_to_whole_image,
            max_crops_per_image=settings.pipeline.max_crops_per_image,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record (stored with the version)."""
        return {
            "format": MODEL_SET_FORMAT,
            "detectors": [d.model_dump(mode="json") for d in self.detectors],
            "embedders": [e.model_dump(mode="json") for e in self.embedders],
            "fusion": self.fusion.model_dump(mode="json"),
            "fallback_to_whole_image": self.fallback_to_whole_image,
            "max_crops_per_image": self.max_crops_per_image,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSet:
        """The model set of a record made by :meth:`to_dict`; raises ModelConfigError for another one."""
        if data.get("format") != MODEL_SET_FORMAT:
            raise ModelConfigError(f"unknown model set record (format {data.get('format')!r})")
        try:
            return cls(
                detectors=tuple(DetectorConfig.model_validate(d) for d in data["detectors"]),
                embedders=tuple(EmbedderConfig.model_validate(e) for e in data["embedders"]),
                # versions recorded before fusion.same_garment_iou existed kept every fused box
                fusion=FusionSettings.model_validate({"same_garment_iou": 1.0, **data["fusion"]}),
                fallback_to_whole_image=bool(data["fallback_to_whole_image"]),
                max_crops_per_image=int(data["max_crops_per_image"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelConfigError(f"invalid model set record: {exc}") from exc

    def applied_to(self, settings: Settings) -> Settings:
        """``settings`` (runtime, device, threads, files...) running these models instead of its own."""
        pipeline = settings.pipeline.model_copy(
            update={
                "fallback_to_whole_image": self.fallback_to_whole_image,
                "max_crops_per_image": self.max_crops_per_image,
            }
        )
        return settings.model_copy(
            update={
                "detectors": list(self.detectors),
                "embedders": list(self.embedders),
                "fusion": self.fusion,
                "pipeline": pipeline,
            }
        )

    def detection_key(self) -> str:
        """Equal for model sets that find the same garments (their detections can be shared)."""
        record = self.to_dict()
        return repr((record["detectors"], record["fusion"], record["fallback_to_whole_image"],
                     record["max_crops_per_image"]))  # fmt: skip

    def describe(self) -> str:
        detectors = ", ".join(f"{d.backend}:{d.model or d.name}" for d in self.detectors) or "none"
        embedders = " + ".join(f"{e.backend}:{e.model}" for e in self.embedders)
        return f"detectors {detectors}; embedders {embedders}"
