"""Writing the trained embedder's checkpoint.

Its format and its reader live with serving: :mod:`ingestion.embedders.trained_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clothes_search.settings import EmbedderBackend
from ingestion.embedders.trained_checkpoint import CHECKPOINT_FORMAT, preprocessing_dict
from ingestion.embedders.trained_model import Backbone, EmbeddingModel


def checkpoint_dict(
    model: EmbeddingModel,
    backbone: Backbone,
    *,
    backbone_trained: bool,
    data_hash: str,
    trained: dict[str, Any],
    metrics: dict[str, float],
) -> dict[str, Any]:
    """The checkpoint of a trained model (see the module docstring)."""
    embed_backbone = backbone_trained or backbone.spec.backend is not EmbedderBackend.EFFICIENTNET_LITE
    state = {f"head.{k}": v.detach().cpu() for k, v in model.head.state_dict().items()}
    if embed_backbone:
        state.update({f"backbone.{k}": v.detach().cpu() for k, v in model.backbone.state_dict().items()})
    head = model.head
    return {
        "format": CHECKPOINT_FORMAT,
        "backbone": str(backbone.spec),
        "backbone_embedded": embed_backbone,
        "backbone_sha256": backbone.weights_sha256,
        "open_clip_config": backbone.open_clip_config,
        "dim": head.linear.out_features,
        "feature_dim": backbone.feature_dim,
        "head": head.kind,
        "image_size": backbone.preprocessing.size,
        "preprocessing": preprocessing_dict(backbone.preprocessing),
        "state_dict": state,
        "data_hash": data_hash,
        "trained": trained,
        "metrics": metrics,
    }


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write atomically (a partial file is renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(path)
