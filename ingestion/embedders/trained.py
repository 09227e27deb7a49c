"""An embedder trained with ``clothes-search train embedder``: backbone + projection head from a checkpoint.

``checkpoint`` is the file the trainer wrote (its format: :mod:`ingestion.embedders.trained_checkpoint`);
``model`` is free text for people (e.g. the backbone spec); the checkpoint says which backbone to build.
Vectors are the L2-normalised ``dim``-d outputs of the head. The weights id is the checkpoint file's
SHA-256, so every trained model gets its own model signature.
"""

from __future__ import annotations

import torch

from ingestion.checkpoints import file_sha256, require_file
from ingestion.embedders.base import Embedder
from ingestion.embedders.preprocess import Preprocessing
from ingestion.embedders.trained_checkpoint import load_trained_embedder, read_checkpoint
from ingestion.embedders.trained_model import BackboneSpec, backbone_embedder
from ingestion.errors import ModelConfigError, ModelWeightsMissingError


class TrainedEmbedder(Embedder):
    """``head(backbone(crop))`` of a trained-embedder checkpoint."""

    def weights_present(self) -> bool:
        if self.config.checkpoint is None or not self.config.checkpoint.expanduser().is_file():
            return False
        try:
            checkpoint = read_checkpoint(self.config.checkpoint.expanduser())
        except ModelConfigError:
            return False
        if checkpoint["backbone_embedded"]:
            return True
        spec = BackboneSpec.parse(checkpoint["backbone"])
        backbone = backbone_embedder(
            self.config.model_copy(update={"backend": spec.backend, "model": spec.model, "checkpoint": None})
        )
        return backbone.weights_present()

    def weights_id(self) -> str:
        return "sha256:" + file_sha256(require_file(self.config.checkpoint, f"embedder {self.name!r}"))

    def build(self) -> tuple[torch.nn.Module, Preprocessing, int]:
        path = require_file(self.config.checkpoint, f"embedder {self.name!r}")
        try:
            loaded = load_trained_embedder(path)
        except ModelConfigError as exc:
            raise ModelConfigError(f"embedder {self.name!r}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelConfigError(f"embedder {self.name!r}: {path} lacks or garbles {exc}") from exc
        except ModelWeightsMissingError as exc:
            raise ModelWeightsMissingError(f"embedder {self.name!r}: backbone: {exc}") from exc
        trained = loaded.preprocessing
        preprocessing = Preprocessing(
            size=self.config.image_size or trained.size,
            mean=trained.mean,
            std=trained.std,
            resize_mode=self.config.resize_mode,
            interpolation=trained.interpolation,
        )
        return loaded.model, preprocessing, loaded.dim
