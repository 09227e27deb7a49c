"""Embedding backends, chosen by name from configuration."""

from __future__ import annotations

import torch

from clothes_search.settings import EmbedderBackend, EmbedderConfig
from ingestion.embedders.base import Embedder, EmbedderIdentity
from ingestion.onnx_models import RuntimeChoice


def build_embedder(
    config: EmbedderConfig, device: torch.device, runtime: RuntimeChoice | None = None
) -> Embedder:
    """The embedder for ``config.backend``; its weights load later, on first use. ``runtime``
    (default: PyTorch) says whether it runs with ONNX Runtime (see :class:`RuntimeChoice`)."""
    match config.backend:
        case EmbedderBackend.EFFICIENTNET_LITE:
            from ingestion.embedders.efficientnet_lite import EfficientNetLiteEmbedder

            return EfficientNetLiteEmbedder(config, device, runtime)
        case EmbedderBackend.OPEN_CLIP:
            from ingestion.embedders.open_clip_tower import OpenClipEmbedder

            return OpenClipEmbedder(config, device, runtime)
        case EmbedderBackend.TORCHVISION:
            from ingestion.embedders.torchvision_backbone import TorchvisionEmbedder

            return TorchvisionEmbedder(config, device, runtime)
        case EmbedderBackend.TRAINED:
            from ingestion.embedders.trained import TrainedEmbedder

            return TrainedEmbedder(config, device, runtime)
    raise ValueError(f"unknown embedder backend {config.backend!r}")


__all__ = ["Embedder", "EmbedderIdentity", "RuntimeChoice", "build_embedder"]
