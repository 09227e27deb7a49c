"""The trained embedder's checkpoint: one ``torch.save`` dict, readable with ``weights_only=True``.

Serving reads it here (:func:`load_trained_embedder`); ``clothes-search train embedder`` writes it
(:mod:`clothes_search.training.embedder.checkpoint`).

Keys:

* ``format``: :data:`CHECKPOINT_FORMAT`;
* ``backbone``: the backbone spec (``efficientnet_lite:lite0``…);
* ``backbone_embedded``: whether ``state_dict`` holds the backbone's weights (``backbone.*``): always
  when it was fine-tuned and for backbones loaded from a local file; not for a frozen EfficientNet-Lite,
  whose weights are re-loaded from the installed package and checked against ``backbone_sha256``;
* ``backbone_sha256``: SHA-256 of the pretrained backbone weights file it started from;
* ``open_clip_config``: the open_clip model config (open_clip backbones only), else None;
* ``dim``, ``feature_dim``, ``head`` (``"bn"`` or ``"l2"``), ``image_size`` and ``preprocessing``
  (size, mean, std, resize mode, interpolation);
* ``state_dict``: ``head.*`` (and ``backbone.*`` when embedded);
* ``data_hash``: :func:`clothes_search.training.data.data_hash` of the train (and validation) split;
* ``trained``: options, epochs, steps, seconds, final loss; ``metrics``: validation recall@1/10/20.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clothes_search.settings import ResizeMode
from ingestion.checkpoints import load_checkpoint
from ingestion.embedders.preprocess import Preprocessing
from ingestion.embedders.trained_model import (
    BackboneSpec,
    EmbeddingModel,
    ProjectionHead,
    backbone_architecture,
    load_pretrained_backbone,
)
from ingestion.errors import ModelConfigError

CHECKPOINT_FORMAT = "clothes-search-embedder/1"


def preprocessing_dict(preprocessing: Preprocessing) -> dict[str, Any]:
    return {
        "size": preprocessing.size,
        "mean": list(preprocessing.mean),
        "std": list(preprocessing.std),
        "resize_mode": str(preprocessing.resize_mode),
        "interpolation": preprocessing.interpolation,
    }


@dataclass
class LoadedEmbedder:
    """A checkpoint turned back into a model, with the preprocessing it was trained with."""

    model: EmbeddingModel
    preprocessing: Preprocessing
    dim: int
    checkpoint: dict[str, Any]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict; :class:`ModelConfigError` when the file is not a trained-embedder checkpoint."""
    checkpoint = load_checkpoint(path)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ModelConfigError(
            f"{path} is not a trained-embedder checkpoint (format {checkpoint.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}); make one with `clothes-search train embedder`"
        )
    return checkpoint


def load_trained_embedder(path: Path) -> LoadedEmbedder:
    """Rebuild backbone and head from a checkpoint file; raises :class:`ModelConfigError` on a mismatch."""
    checkpoint = read_checkpoint(path)
    spec = BackboneSpec.parse(checkpoint["backbone"])
    state: dict[str, torch.Tensor] = checkpoint["state_dict"]
    if checkpoint["backbone_embedded"]:
        backbone_module = backbone_architecture(spec, checkpoint.get("open_clip_config"))
    else:
        pretrained = load_pretrained_backbone(spec)
        if pretrained.weights_sha256 != checkpoint["backbone_sha256"]:
            raise ModelConfigError(
                f"{path} was trained on {spec} weights sha256:{checkpoint['backbone_sha256'][:12]}…, "
                f"but the installed ones are sha256:{pretrained.weights_sha256[:12]}…; "
                "install the same package or retrain"
            )
        backbone_module = pretrained.module
        state = {**state, **{f"backbone.{k}": v for k, v in backbone_module.state_dict().items()}}
    model = EmbeddingModel(
        backbone_module,
        ProjectionHead(int(checkpoint["feature_dim"]), int(checkpoint["dim"]), checkpoint["head"]),
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = "; ".join(str(exc).splitlines()[:3])
        raise ModelConfigError(f"{path}: weights do not match {spec} + head: {first}") from exc
    raw = checkpoint["preprocessing"]
    preprocessing = Preprocessing(
        size=int(raw["size"]),
        mean=tuple(raw["mean"]),
        std=tuple(raw["std"]),
        resize_mode=ResizeMode(raw["resize_mode"]),
        interpolation=raw["interpolation"],
    )
    return LoadedEmbedder(model.eval(), preprocessing, int(checkpoint["dim"]), checkpoint)
