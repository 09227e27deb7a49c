"""The trained embedder's architecture: a backbone and a projection head to ``dim``.

The backbone is built by the pipeline's own embedder backends (EfficientNet-Lite, an open_clip image
tower or a torchvision classifier). Serving loads it from a checkpoint
(:mod:`ingestion.embedders.trained_checkpoint`); ``clothes-search train embedder`` imports the same
classes to train it.

Backbone specs are ``<backend>:<model>``: ``efficientnet_lite:lite0`` (ImageNet weights from the offline
package), ``open_clip:<architecture>`` or ``torchvision:<arch>`` (weights from a local checkpoint file).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from efficientnet_lite_pytorch import EfficientNet

from clothes_search.settings import EmbedderBackend, EmbedderConfig
from ingestion.embedders.base import Embedder
from ingestion.embedders.efficientnet_lite import EfficientNetLiteEmbedder, PooledFeatures
from ingestion.embedders.open_clip_tower import OpenClipEmbedder
from ingestion.embedders.preprocess import Preprocessing
from ingestion.embedders.torchvision_backbone import TorchvisionEmbedder, strip_classifier
from ingestion.errors import ModelConfigError

HeadKind = Literal["bn", "l2"]
_BACKBONE_EMBEDDERS: dict[EmbedderBackend, type[Embedder]] = {
    EmbedderBackend.EFFICIENTNET_LITE: EfficientNetLiteEmbedder,
    EmbedderBackend.OPEN_CLIP: OpenClipEmbedder,
    EmbedderBackend.TORCHVISION: TorchvisionEmbedder,
}


def backbone_embedder(config: EmbedderConfig) -> Embedder:
    """The embedder backend that builds a backbone of ``config.backend`` (on the CPU)."""
    backend = _BACKBONE_EMBEDDERS.get(config.backend)
    if backend is None:
        raise ModelConfigError(f"{config.backend} cannot be a trained embedder's backbone")
    return backend(config, torch.device("cpu"))


@dataclass(frozen=True)
class BackboneSpec:
    """``<backend>:<model>``: ``efficientnet_lite:lite0``, ``open_clip:RN50``, ``torchvision:resnet50``."""

    backend: EmbedderBackend
    model: str

    @classmethod
    def parse(cls, text: str) -> BackboneSpec:
        backend, separator, model = text.partition(":")
        choices = [b.value for b in EmbedderBackend if b.value != "trained"]
        if not separator or not model or backend not in choices:
            raise ValueError(
                f"backbone {text!r} is not '<backend>:<model>' with a backend in {', '.join(choices)}"
            )
        return cls(EmbedderBackend(backend), model)

    def __str__(self) -> str:
        return f"{self.backend.value}:{self.model}"


@dataclass
class Backbone:
    """A backbone module mapping normalised images (N, 3, S, S) to features (N, feature_dim)."""

    spec: BackboneSpec
    module: torch.nn.Module
    preprocessing: Preprocessing
    feature_dim: int
    weights_sha256: str
    #: the open_clip model config, kept so the architecture can be rebuilt where it is not registered
    open_clip_config: dict[str, Any] | None = None


def load_pretrained_backbone(
    spec: BackboneSpec, checkpoint: Path | None = None, config_dir: Path | None = None
) -> Backbone:
    """The backbone with its pretrained weights, loaded by the pipeline's embedder backend of ``spec``.

    ``checkpoint``: the local weights file (open_clip, torchvision; optional for EfficientNet-Lite, whose
    ImageNet weights come from the installed package). ``config_dir``: an open_clip model-config folder
    for architectures open_clip does not list.
    """
    options = {"model_config_dir": str(config_dir)} if config_dir is not None else {}
    config = EmbedderConfig(
        name=f"backbone {spec}",
        backend=spec.backend,
        model=spec.model,
        checkpoint=checkpoint,
        options=options,
    )
    embedder = backbone_embedder(config)
    module, preprocessing, feature_dim = embedder.build()  # the backend's own loader, no device move
    open_clip_config = None
    if spec.backend is EmbedderBackend.OPEN_CLIP:
        import open_clip

        open_clip_config = open_clip.get_model_config(spec.model)
    return Backbone(
        spec=spec,
        module=module,
        preprocessing=preprocessing,
        feature_dim=feature_dim,
        weights_sha256=embedder.weights_id().removeprefix("sha256:"),
        open_clip_config=open_clip_config,
    )


def backbone_architecture(
    spec: BackboneSpec, open_clip_config: dict[str, Any] | None = None
) -> torch.nn.Module:
    """The backbone's module with random weights (to load a fine-tuned state dict into)."""
    match spec.backend:
        case EmbedderBackend.EFFICIENTNET_LITE:
            return PooledFeatures(
                EfficientNet.from_name(f"efficientnet-{spec.model.removeprefix('efficientnet-')}")
            )
        case EmbedderBackend.TORCHVISION:
            import torchvision

            model = torchvision.models.get_model(spec.model, weights=None)
            strip_classifier(model)
            return model
        case EmbedderBackend.OPEN_CLIP:
            return _open_clip_tower(spec.model, open_clip_config)
    raise ModelConfigError(f"backbone {spec}: no architecture for backend {spec.backend}")


def _open_clip_tower(name: str, config: dict[str, Any] | None) -> torch.nn.Module:
    import open_clip

    if name in open_clip.list_models():
        return open_clip.create_model(name, device="cpu").visual
    if config is None:
        raise ModelConfigError(
            f"open_clip does not know {name!r} and the checkpoint carries no config for it"
        )
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder)
        return open_clip.create_model(name, device="cpu").visual


class ProjectionHead(torch.nn.Module):
    """Linear map from backbone features to ``dim``, then batch norm (``"bn"``, a BNNeck) or nothing
    (``"l2"``: the L2 normalisation every consumer applies is the only normalisation)."""

    def __init__(self, feature_dim: int, dim: int, kind: HeadKind = "bn") -> None:
        super().__init__()
        if kind not in ("bn", "l2"):
            raise ValueError(f"unknown head {kind!r} (choose bn or l2)")
        self.kind = kind
        self.linear = torch.nn.Linear(feature_dim, dim, bias=kind == "l2")
        self.norm = torch.nn.BatchNorm1d(dim) if kind == "bn" else torch.nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(features.float()))


class EmbeddingModel(torch.nn.Module):
    """``head(backbone(images))``: un-normalised ``dim``-d embeddings (normalise before comparing)."""

    def __init__(self, backbone: torch.nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).flatten(1))
