"""Embedding backends, chosen by name from configuration."""

from __future__ import annotations

import torch

from clothes_search.settings import EmbedderBackend, EmbedderConfig
from ingestion.embedders.base import Embedder, EmbedderIdentity


def build_embedder(config: EmbedderConfig, device: torch.device) -> Embedder:
    """The embedder for ``config.backend``; its weights load later, on first use."""
    match config.backend:
        case EmbedderBackend.EFFICIENTNET_LITE:
            from ingestion.embedders.efficientnet_lite import EfficientNetLiteEmbedder

            return EfficientNetLiteEmbedder(config, device)
        case EmbedderBackend.OPEN_CLIP:
            from ingestion.embedders.open_clip_tower import OpenClipEmbedder

            return OpenClipEmbedder(config, device)
        case EmbedderBackend.TORCHVISION:
            from ingestion.embedders.torchvision_backbone import TorchvisionEmbedder

            return TorchvisionEmbedder(config, device)
        case EmbedderBackend.TRAINED:
            from ingestion.embedders.trained import TrainedEmbedder

            return TrainedEmbedder(config, device)
    raise ValueError(f"unknown embedder backend {config.backend!r}")


__all__ = ["Embedder", "EmbedderIdentity", "build_embedder"]
